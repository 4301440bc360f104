//! How deep a CEL condition would make cel recurse, bounded by a cheap scan before cel sees it.
//!
//! cel 0.15 recurses once per level of an expression's tree when it parses, evaluates and drops
//! it. Its parser limits the nesting of brackets and ternaries (96 levels), not chains, whose
//! every link is one more level: `value.x.x…`, `value[0][0]…`, `value + 1 + 1…`. A long enough
//! chain overflows the stack, which aborts a native process and traps the component. [`bound`]
//! bounds the depth without recursing, in one pass over the bytes, and
//! [`crate::condition::Condition::compile`] refuses what is too deep before cel parses it.
//!
//! The scan reads tokens as cel's lexer does (strings with their escapes and raw forms,
//! comments, numbers, identifiers), so that brackets, operators and separators inside a string
//! literal or a comment count for nothing, and nothing that cel reads as code is skipped. What
//! it cannot read exactly (an unterminated string, an invalid escape, a closing bracket that
//! matches no opening one) is a lexical or syntax error that cel refuses as well: the scan
//! refuses it first, so it never has to guess.

/// An upper bound on the depth of the tree cel builds for `source` (macros expanded), or the
/// lexical or bracket error cel would refuse it for.
///
/// Every link of a chain (`.`, an operator character, `in`) and every ternary counts one level,
/// an opening bracket two (its node, and room for the nodes a macro expands around it: the
/// three-argument `map` puts its value three levels below the call), a bracket's content one
/// more than its deepest part, and a run of `&&` or `||`, which cel balances into a tree, the
/// logarithm of its length.
pub(crate) fn bound(source: &str) -> Result<usize, String> {
    let bytes = source.as_bytes();
    let mut groups = vec![Group::new(None)];
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let group = groups
            .last_mut()
            .expect("the outermost group is never closed");
        at = match byte {
            b'\'' | b'"' => skip_string(bytes, at, false)?,
            b'`' => skip_escaped_identifier(bytes, at)?,
            b'/' if bytes.get(at + 1) == Some(&b'/') => bytes[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |newline| at + newline + 1),
            b'0'..=b'9' => skip_number(bytes, at),
            b'.' if bytes.get(at + 1).is_some_and(u8::is_ascii_digit) => {
                group.links += 1;
                skip_fraction(bytes, at)
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => match string_prefix(bytes, at) {
                Some((quote, raw)) => skip_string(bytes, quote, raw)?,
                None => {
                    let end = run_end(bytes, at, |&b| b.is_ascii_alphanumeric() || b == b'_');
                    if &bytes[at..end] == b"in" {
                        group.links += 1;
                    }
                    end
                }
            },
            b'(' | b'[' | b'{' => {
                group.links += 2;
                groups.push(Group::new(Some(byte)));
                at + 1
            }
            b')' | b']' | b'}' => {
                let opening = match byte {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                if group.opening != Some(opening) {
                    return Err(format!(
                        "`{}` at byte {at} closes no `{}`",
                        byte as char, opening as char
                    ));
                }
                let closed = groups.pop().expect("checked above").levels();
                let outer = groups
                    .last_mut()
                    .expect("the outermost group is never closed");
                outer.deepest_part = outer.deepest_part.max(closed + 1);
                at + 1
            }
            b',' => {
                group.separate();
                at + 1
            }
            b'&' | b'|' if bytes.get(at + 1) == Some(&byte) => {
                group.separate();
                group.logical[usize::from(byte == b'|')] += 1;
                at + 2
            }
            b'?' => {
                group.ternaries += 1;
                at + 1
            }
            b'.' | b'+' | b'-' | b'*' | b'/' | b'%' | b'<' | b'>' | b'=' | b'!' => {
                group.links += 1;
                at + 1
            }
            // Whitespace, `:`, and bytes cel's lexer skips as errors.
            _ => at + 1,
        };
    }
    let outermost = groups.remove(0);
    if let Some(unclosed) = groups.first() {
        let opening = unclosed.opening.map_or('?', char::from);
        return Err(format!("a `{opening}` is never closed"));
    }
    Ok(outermost.levels())
}

/// The content of one pair of brackets (or the whole condition) as the scan goes through it.
struct Group {
    /// The bracket that opened it; `None` for the whole condition.
    opening: Option<u8>,
    /// Links of the current part (since the last `,`, `&&` or `||`).
    links: usize,
    /// The deepest bracket within the current part, plus one.
    deepest_part: usize,
    /// The deepest part so far.
    deepest: usize,
    /// How many `&&` and `||` separate its parts.
    logical: [usize; 2],
    /// How many `?` it holds: a chain of ternaries nests, whatever separates its parts.
    ternaries: usize,
}

impl Group {
    fn new(opening: Option<u8>) -> Group {
        Group {
            opening,
            links: 0,
            deepest_part: 0,
            deepest: 0,
            logical: [0, 0],
            ternaries: 0,
        }
    }

    /// Ends the current part at a `,`, `&&` or `||`: its links sit above its deepest bracket.
    fn separate(&mut self) {
        self.deepest = self.deepest.max(self.links + self.deepest_part);
        self.links = 0;
        self.deepest_part = 0;
    }

    /// Its levels: the deepest part, under its ternaries and the balanced trees of its `&&`s
    /// and `||`s (an `||` of `&&` runs is no deeper than both trees on top of each other).
    fn levels(mut self) -> usize {
        self.separate();
        let [ands, ors] = self.logical;
        self.deepest + self.ternaries + ceil_log2(ands + 1) + ceil_log2(ors + 1)
    }
}

/// ⌈log₂ n⌉ for n ≥ 1.
fn ceil_log2(n: usize) -> usize {
    n.next_power_of_two().trailing_zeros() as usize
}

/// Where the string starting at identifier byte `at` opens its quotes, and whether it is raw:
/// `r'…'`, `b'…'`, `br'…'` (in any case). `None` when `at` starts an identifier.
fn string_prefix(bytes: &[u8], at: usize) -> Option<(usize, bool)> {
    let is_quote = |i: usize| matches!(bytes.get(i), Some(b'\'' | b'"'));
    let is_raw = |i: usize| matches!(bytes.get(i), Some(b'r' | b'R'));
    let is_bytes = matches!(bytes[at], b'b' | b'B');
    if is_raw(at) && is_quote(at + 1) {
        Some((at + 1, true))
    } else if is_bytes && is_quote(at + 1) {
        Some((at + 1, false))
    } else if is_bytes && is_raw(at + 1) && is_quote(at + 2) {
        Some((at + 2, true))
    } else {
        None
    }
}

/// The end of the string literal whose quotes open at `at`: `'…'` and `"…"` on one line,
/// `'''…'''` and `"""…"""` on any number; escapes unless `raw`.
fn skip_string(bytes: &[u8], at: usize, raw: bool) -> Result<usize, String> {
    let quote = bytes[at];
    let unterminated = || format!("the string literal at byte {at} is never closed");
    let triple = [quote; 3];
    if bytes[at..].starts_with(&triple) {
        let mut i = at + 3;
        loop {
            match bytes.get(i) {
                None => return Err(unterminated()),
                Some(_) if bytes[i..].starts_with(&triple) => return Ok(i + 3),
                Some(b'\\') if !raw => i = skip_escape(bytes, i)?,
                Some(_) => i += 1,
            }
        }
    }
    let mut i = at + 1;
    loop {
        match bytes.get(i) {
            None | Some(b'\n' | b'\r') => return Err(unterminated()),
            Some(&b) if b == quote => return Ok(i + 1),
            Some(b'\\') if !raw => i = skip_escape(bytes, i)?,
            Some(_) => i += 1,
        }
    }
}

/// The end of the escape sequence at `at` (a `\`), as CEL defines them.
fn skip_escape(bytes: &[u8], at: usize) -> Result<usize, String> {
    let digits = |from: usize, count: usize, valid: &dyn Fn(u8) -> bool| {
        bytes
            .get(from..from + count)
            .is_some_and(|run| run.iter().all(|&b| valid(b)))
    };
    let octal = |b: u8| (b'0'..=b'7').contains(&b);
    let end = match bytes.get(at + 1) {
        Some(
            b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'"' | b'\'' | b'\\' | b'?' | b'`',
        ) => Some(at + 2),
        Some(b'x' | b'X') => digits(at + 2, 2, &|b| b.is_ascii_hexdigit()).then_some(at + 4),
        Some(b'u') => digits(at + 2, 4, &|b| b.is_ascii_hexdigit()).then_some(at + 6),
        Some(b'U') => digits(at + 2, 8, &|b| b.is_ascii_hexdigit()).then_some(at + 10),
        Some(b'0'..=b'3') => digits(at + 2, 2, &octal).then_some(at + 4),
        _ => None,
    };
    end.ok_or_else(|| format!("invalid escape sequence at byte {at}"))
}

/// The end of the escaped identifier (`` `a.b-c` ``) at `at`.
fn skip_escaped_identifier(bytes: &[u8], at: usize) -> Result<usize, String> {
    let length = bytes[at + 1..]
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b"_.-/ ".contains(&b)))
        .unwrap_or(bytes.len() - at - 1);
    match bytes.get(at + 1 + length) {
        Some(b'`') if length > 0 => Ok(at + length + 2),
        _ => Err(format!("the quoted identifier at byte {at} is not closed")),
    }
}

/// The end of the number at `at` (a digit): `0x1F`, `12`, `12u`, `1.5`, `1e-3`, `1.5e3`.
fn skip_number(bytes: &[u8], at: usize) -> usize {
    let unsigned = |end: usize| match bytes.get(end) {
        Some(b'u' | b'U') => end + 1,
        _ => end,
    };
    if bytes[at..].starts_with(b"0x") && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit) {
        return unsigned(run_end(bytes, at + 2, u8::is_ascii_hexdigit));
    }
    let digits = run_end(bytes, at, u8::is_ascii_digit);
    if bytes.get(digits) == Some(&b'.') && bytes.get(digits + 1).is_some_and(u8::is_ascii_digit) {
        return skip_fraction(bytes, digits);
    }
    match skip_exponent(bytes, digits) {
        end if end > digits => end,
        _ => unsigned(digits),
    }
}

/// The end of the fraction at `at` (a `.` before a digit) and its exponent, if any.
fn skip_fraction(bytes: &[u8], at: usize) -> usize {
    skip_exponent(bytes, run_end(bytes, at + 1, u8::is_ascii_digit))
}

/// The end of the exponent (`e5`, `E-3`) at `at`, or `at` when there is none.
fn skip_exponent(bytes: &[u8], at: usize) -> usize {
    if !matches!(bytes.get(at), Some(b'e' | b'E')) {
        return at;
    }
    let digits = match bytes.get(at + 1) {
        Some(b'+' | b'-') => at + 2,
        _ => at + 1,
    };
    match run_end(bytes, digits, u8::is_ascii_digit) {
        end if end > digits => end,
        _ => at,
    }
}

/// The end of the run of bytes from `from` that are `valid`.
fn run_end(bytes: &[u8], from: usize, valid: fn(&u8) -> bool) -> usize {
    match bytes.get(from..) {
        Some(rest) => rest
            .iter()
            .position(|b| !valid(b))
            .map_or(bytes.len(), |n| from + n),
        None => from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::IdedExpr;
    use proptest::prelude::*;

    /// The depth of the tree cel builds (a leaf is 0).
    fn tree_depth(expression: &IdedExpr) -> usize {
        crate::condition::children(expression)
            .into_iter()
            .map(|c| tree_depth(c) + 1)
            .max()
            .unwrap_or(0)
    }

    /// Conditions built from every kind of node, small enough for any stack.
    fn expression() -> impl Strategy<Value = String> {
        let atom = prop::sample::select(
            &[
                "value", "x", "1", "1.5e-3", "0x1Fu", "'a.b'", r"r'\'", r"b'\x00'", "'''(]'''",
                "true", "null", "[]", "{}", "`a.b-c`", "-1",
            ][..],
        )
        .prop_map(str::to_owned);
        atom.prop_recursive(6, 64, 4, |inner| {
            let binary =
                prop::sample::select(&["+", "-", "*", "==", "<=", "&&", "||", "in", "!="][..]);
            let method = prop::sample::select(
                &[
                    "exists(k, k)",
                    "all(k, k)",
                    "map(k, k)",
                    "map(k, k, k)",
                    "filter(k, k)",
                    "exists_one(k, k)",
                    "size()",
                    "f(1, 2)",
                ][..],
            );
            prop_oneof![
                (inner.clone(), binary, inner.clone())
                    .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
                inner.clone().prop_map(|a| format!("({a})")),
                inner.clone().prop_map(|a| format!("!{a}")),
                inner.clone().prop_map(|a| format!("-{a}")),
                (inner.clone(), inner.clone(), inner.clone())
                    .prop_map(|(c, a, b)| format!("{c} ? {a} : {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, i)| format!("{a}[{i}]")),
                inner.clone().prop_map(|a| format!("{a}.x")),
                (inner.clone(), method).prop_map(|(a, m)| format!("{a}.{m}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("f({a}, {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}, {b}]")),
                (inner.clone(), inner.clone()).prop_map(|(k, v)| format!("{{{k}: {v}}}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}].map(m, {b})")),
                inner.prop_map(|a| format!("has({a}.y) // ((( '\n")),
            ]
        })
    }

    /// Text that lexes in odd ways (quotes, escapes, prefixes, comments, numbers, brackets),
    /// alone or between expressions.
    fn tricky_text() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(
            &[
                "'", "\"", "'''", "\\", "r", "b", "x", "u", "U", "e", "0", "7", "1", ".", "-", "+",
                "/", "//", "\n", "`", "(", ")", "[", "]", "{", "}", ",", "&&", "||", "?", ":", " ",
                "a", "in", "value", "f", "\\x", "\\u00", "😀",
            ][..],
        )
        .prop_map(str::to_owned);
        let part = prop_oneof![4 => piece, 1 => expression()];
        prop::collection::vec(part, 0..24).prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn levels_bound_the_depth_of_the_tree_cel_builds(source in expression()) {
            let levels = bound(&source).unwrap();
            if let Ok(program) = cel::Program::compile(&source) {
                let depth = tree_depth(program.expression());
                prop_assert!(depth <= levels, "{source}: depth {depth}, bound {levels}");
            }
        }

        #[test]
        fn the_scan_refuses_only_what_cel_refuses_and_bounds_what_it_accepts(
            source in tricky_text(),
        ) {
            match (bound(&source), cel::Program::compile(&source)) {
                (Err(error), Ok(_)) => prop_assert!(false, "{source:?} refused: {error}"),
                (Ok(levels), Ok(program)) => {
                    let depth = tree_depth(program.expression());
                    prop_assert!(depth <= levels, "{source:?}: depth {depth}, bound {levels}");
                }
                (_, Err(_)) => {}
            }
        }
    }

    fn levels(source: &str) -> usize {
        bound(source).unwrap()
    }

    #[test]
    fn chains_count_one_level_per_link() {
        assert_eq!(levels("value"), 0);
        assert_eq!(levels("value > 80"), 1);
        assert_eq!(levels(&format!("value{}", ".x".repeat(50))), 50);
        assert_eq!(levels(&format!("value{}", " + 1".repeat(50))), 50);
        assert_eq!(levels(&format!("value{}", " in x".repeat(50))), 50);
        assert!(levels(&format!("value{}", "[0]".repeat(50))) >= 50);
        assert!(levels(&format!("value{}", ".f()".repeat(50))) >= 100);
        assert!(levels(&format!("value{}", " ? 1 : 1".repeat(50))) >= 50);
    }

    #[test]
    fn brackets_add_levels_to_what_they_hold() {
        assert_eq!(
            levels(&format!("{}value{}", "(".repeat(20), ")".repeat(20))),
            60
        );
        assert_eq!(levels("f(a, b) + [1, 2]"), 6);
        // A chain inside brackets sits below the links outside them.
        let inner = levels("(value + 1 + 1 + 1)");
        let outer = levels("(value + 1 + 1 + 1) + 1 + 1");
        assert!(outer >= inner + 2, "{inner} {outer}");
    }

    #[test]
    fn logical_runs_count_as_the_balanced_trees_cel_builds() {
        let flat = vec!["keys['meter.1.door'] == true"; 64].join(" && ");
        assert_eq!(levels(&flat), 5 + 6);
        let mixed = vec!["value > 1 && value < 9"; 16].join(" || ");
        assert_eq!(levels(&mixed), 1 + 5 + 4);
    }

    #[test]
    fn strings_and_comments_hide_what_they_hold() {
        assert_eq!(levels("'((((.x.x.x' == value"), 2);
        let strings = r#""a\"]" + r'\' + b'\x00' + br"\" + '''(''' + """)""" + 1"#;
        assert_eq!(levels(strings), 6);
        assert_eq!(levels("value // (((( .x.x\n > 1"), 1);
        assert_eq!(levels("`a.b-c` > 1.5e-3 && 0x1Fu < .5"), 3);
        // An identifier ending in `r` or `b` is no string prefix; a number's `1` neither.
        assert_eq!(levels(r"ar'\'' + 1"), 1);
        assert_eq!(levels(r"1r'\' + 1"), 1);
    }

    #[test]
    fn what_cel_could_not_lex_is_refused() {
        for source in [
            "'abc",
            "'ab\ncd'",
            r"'\q + 1 + 1'",
            r"'\x0' + 1",
            "'''abc''",
            "r'abc",
            "`a.b",
            "``",
            "value)",
            "(value]",
            "[value",
        ] {
            assert!(bound(source).is_err(), "{source:?} was measured");
        }
    }
}
