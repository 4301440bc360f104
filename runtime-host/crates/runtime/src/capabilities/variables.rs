//! `fermyon:spin/variables@2.0.0`: a component reads the variables its configuration gives it
//! (the `[component.NAME.variables]` of a `spin.toml`; Weir's `[query.variables]`). Names follow
//! Spin's rules, so a component that works here asks for names Spin accepts too.

use std::collections::HashMap;

use wasmtime::component::{HasData, Linker};

use super::bindings::fermyon::spin::variables::{self as wit, Error};

/// The variables of one instance.
#[derive(Default)]
pub(crate) struct VariablesState {
    values: HashMap<String, String>,
}

impl VariablesState {
    pub(crate) fn new(values: HashMap<String, String>) -> Self {
        VariablesState { values }
    }
}

/// Spin's rule for variable names: lowercase ASCII letters, digits and single underscores,
/// starting with a letter and not ending with an underscore.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("may hold only lowercase letters, digits and underscores");
    }
    if name.ends_with('_') || name.contains("__") {
        return Err("may not end with an underscore or hold two in a row");
    }
    Ok(())
}

impl wit::Host for VariablesState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        if let Err(reason) = check_name(&name) {
            return Ok(Err(Error::InvalidName(format!("`{name}` {reason}"))));
        }
        Ok(self
            .values
            .get(&name)
            .cloned()
            .ok_or(Error::Undefined(format!("no variable `{name}`"))))
    }
}

struct Variables;

impl HasData for Variables {
    type Data<'a> = &'a mut VariablesState;
}

pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut VariablesState,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Variables>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_spin_rules() {
        for good in ["database_url", "a", "x1_y2"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Database", "1st", "a-b", "a__b", "trailing_", "_x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn unknown_and_invalid_names_are_errors_not_traps() {
        let mut state = VariablesState::new(HashMap::from([("redis_url".into(), "r".into())]));
        use wit::Host as _;
        assert_eq!(state.get("redis_url".into()).await.unwrap(), Ok("r".into()));
        assert!(matches!(
            state.get("nope".into()).await.unwrap(),
            Err(Error::Undefined(_))
        ));
        assert!(matches!(
            state.get("Nope".into()).await.unwrap(),
            Err(Error::InvalidName(_))
        ));
    }
}
