//! `spin:postgres@4.0.0` values ↔ tokio-postgres, following Spin's own table
//! (`spin-factor-outbound-pg`'s `convert_data_type`, `convert_entry`, `to_sql_parameter`), so a
//! component decodes the same `db-value`s on Weir as on Spin: `timestamp` and `timestamptz` are
//! both `datetime` in UTC, `numeric` is `decimal` text, `jsonb` is compact JSON bytes, and a
//! type outside the table is `unsupported` with its raw binary form. A parameter is accepted for
//! the PostgreSQL types Spin's Rust type for it accepts (a `str` binds to `text`, not `int8`).

use std::error::Error as StdError;

use bytes::BytesMut;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::wire;
use crate::capabilities::bindings::spin::postgres::postgres::{
    Column, DbDataType, DbValue, Interval, ParameterValue, RangeBoundKind,
};

type BoxError = Box<dyn StdError + Sync + Send>;

/// The interface's type of a column of PostgreSQL type `ty`.
pub(super) fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::BYTEA => DbDataType::Binary,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(ty.name().to_owned()),
    }
}

/// The interface's description of a statement's result columns.
pub(super) fn columns(columns: &[tokio_postgres::Column]) -> Vec<Column> {
    columns
        .iter()
        .map(|column| Column {
            name: column.name().to_owned(),
            data_type: data_type(column.type_()),
        })
        .collect()
}

/// Every value of `row`, as the interface carries it.
pub(super) fn row_values(row: &Row) -> Result<Vec<DbValue>, String> {
    (0..row.len())
        .map(|index| {
            let column = &row.columns()[index];
            let raw: Option<Raw<'_>> = row.try_get(index).map_err(|error| error.to_string())?;
            match raw {
                None => Ok(DbValue::DbNull),
                Some(Raw(raw)) => decode(column.type_(), raw)
                    .map_err(|error| format!("column `{}`: {error}", column.name())),
            }
        })
        .collect()
}

/// Any value, undecoded: the row decoder picks the conversion by column type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn decode(ty: &Type, raw: &[u8]) -> Result<DbValue, BoxError> {
    Ok(match *ty {
        Type::BOOL => DbValue::Boolean(bool::from_sql(ty, raw)?),
        Type::BYTEA => DbValue::Binary(raw.to_vec()),
        Type::FLOAT4 => DbValue::Floating32(f32::from_sql(ty, raw)?),
        Type::FLOAT8 => DbValue::Floating64(f64::from_sql(ty, raw)?),
        Type::INT2 => DbValue::Int16(i16::from_sql(ty, raw)?),
        Type::INT4 => DbValue::Int32(i32::from_sql(ty, raw)?),
        Type::INT8 => DbValue::Int64(i64::from_sql(ty, raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbValue::Str(String::from_sql(ty, raw)?),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            DbValue::Datetime(wire::datetime_from_pg(i64::from_sql(&Type::INT8, raw)?)?)
        }
        Type::DATE => DbValue::Date(wire::date_from_pg(i32::from_sql(&Type::INT4, raw)?)?),
        Type::TIME => DbValue::Time(wire::time_from_pg(i64::from_sql(&Type::INT8, raw)?)?),
        Type::UUID => DbValue::Uuid(uuid::Uuid::from_sql(ty, raw)?.hyphenated().to_string()),
        Type::JSONB => {
            let text = raw.strip_prefix(&[1]).ok_or("unknown jsonb version")?;
            let value: serde_json::Value = serde_json::from_slice(text)?;
            DbValue::Jsonb(serde_json::to_vec(&value)?)
        }
        Type::NUMERIC => DbValue::Decimal(wire::numeric_to_text(raw)?),
        Type::INT4_RANGE => DbValue::RangeInt32(range(raw, |b| i32::from_sql(&Type::INT4, b))?),
        Type::INT8_RANGE => DbValue::RangeInt64(range(raw, |b| i64::from_sql(&Type::INT8, b))?),
        Type::NUM_RANGE => DbValue::RangeDecimal(range(raw, |b| {
            wire::numeric_to_text(b).map_err(Into::into)
        })?),
        Type::INT4_ARRAY => DbValue::ArrayInt32(FromSql::from_sql(ty, raw)?),
        Type::INT8_ARRAY => DbValue::ArrayInt64(FromSql::from_sql(ty, raw)?),
        Type::NUMERIC_ARRAY => {
            let values: Vec<Option<Numeric>> = FromSql::from_sql(ty, raw)?;
            DbValue::ArrayDecimal(
                values
                    .into_iter()
                    .map(|v| v.map(|n| wire::numeric_to_text(&n.0)).transpose())
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
            DbValue::ArrayStr(FromSql::from_sql(ty, raw)?)
        }
        Type::INTERVAL => {
            let bytes: [u8; 16] = raw.try_into().map_err(|_| "an interval has 16 bytes")?;
            DbValue::Interval(Interval {
                micros: i64::from_be_bytes(bytes[0..8].try_into()?),
                days: i32::from_be_bytes(bytes[8..12].try_into()?),
                months: i32::from_be_bytes(bytes[12..16].try_into()?),
            })
        }
        _ => DbValue::Unsupported(raw.to_vec()),
    })
}

type WitRange<T> = (Option<(T, RangeBoundKind)>, Option<(T, RangeBoundKind)>);

fn range<T>(
    raw: &[u8],
    element: impl Fn(&[u8]) -> Result<T, BoxError>,
) -> Result<WitRange<T>, BoxError> {
    let (lower, upper) = wire::range_from_pg(raw)?;
    let bound = |bound: Option<(&[u8], bool)>| -> Result<_, BoxError> {
        bound
            .map(|(value, inclusive)| Ok((element(value)?, bound_kind(inclusive))))
            .transpose()
    };
    Ok((bound(lower)?, bound(upper)?))
}

fn bound_kind(inclusive: bool) -> RangeBoundKind {
    if inclusive {
        RangeBoundKind::Inclusive
    } else {
        RangeBoundKind::Exclusive
    }
}

/// A `numeric` in its binary form (arrays of it go through tokio-postgres's array codec).
#[derive(Debug, Clone)]
pub(super) struct Numeric(Vec<u8>);

impl Numeric {
    fn parse(text: &str) -> Result<Self, String> {
        wire::numeric_from_text(text).map(Numeric)
    }
}

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Numeric(raw.to_vec()))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

impl ToSql for Numeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

/// One bound parameter. Each variant accepts the PostgreSQL types Spin's Rust type for the
/// same `parameter-value` accepts, checked in `to_sql_checked`.
#[derive(Debug)]
pub(super) enum Param {
    Bool(bool),
    Char(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 2000-01-01.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 2000-01-01, for `timestamp`.
    Timestamp(i64),
    /// Microseconds since 2000-01-01 UTC, for `timestamptz`.
    TimestampTz(i64),
    Uuid(uuid::Uuid),
    /// Valid JSON text.
    Json(Vec<u8>),
    Numeric(Numeric),
    RangeInt32(WitRange<i32>),
    RangeInt64(WitRange<i64>),
    RangeNumeric(WitRange<Numeric>),
    ArrayInt32(Vec<Option<i32>>),
    ArrayInt64(Vec<Option<i64>>),
    ArrayNumeric(Vec<Option<Numeric>>),
    ArrayText(Vec<Option<String>>),
    Interval(Interval),
    Null,
}

impl Param {
    /// The parameter for `value`; `Err` names what is wrong with it (`bad-parameter`).
    pub(super) fn new(value: ParameterValue) -> Result<Param, String> {
        use ParameterValue as P;
        Ok(match value {
            P::Boolean(v) => Param::Bool(v),
            P::Int8(v) => Param::Char(v),
            P::Int16(v) => Param::Int16(v),
            P::Int32(v) => Param::Int32(v),
            P::Int64(v) => Param::Int64(v),
            P::Floating32(v) => Param::Float32(v),
            P::Floating64(v) => Param::Float64(v),
            P::Str(v) => Param::Text(v),
            P::Binary(v) => Param::Bytes(v),
            P::Date(v) => Param::Date(wire::date_to_pg(v)?),
            P::Time(v) => Param::Time(wire::time_to_pg(v)?),
            P::Datetime(v) => Param::Timestamp(wire::datetime_to_pg(v)?),
            P::Timestamp(v) => Param::TimestampTz(wire::unix_seconds_to_pg(v)?),
            P::Uuid(v) => {
                Param::Uuid(uuid::Uuid::parse_str(&v).map_err(|_| format!("invalid UUID {v}"))?)
            }
            P::Jsonb(v) => {
                serde_json::from_slice::<serde_json::Value>(&v)
                    .map_err(|e| format!("invalid JSON: {e}"))?;
                Param::Json(v)
            }
            P::Decimal(v) => Param::Numeric(Numeric::parse(&v)?),
            P::RangeInt32(v) => Param::RangeInt32(v),
            P::RangeInt64(v) => Param::RangeInt64(v),
            P::RangeDecimal((lower, upper)) => {
                let bound = |b: Option<(String, RangeBoundKind)>| {
                    b.map(|(v, kind)| Numeric::parse(&v).map(|n| (n, kind)))
                        .transpose()
                };
                Param::RangeNumeric((bound(lower)?, bound(upper)?))
            }
            P::ArrayInt32(v) => Param::ArrayInt32(v),
            P::ArrayInt64(v) => Param::ArrayInt64(v),
            P::ArrayDecimal(v) => Param::ArrayNumeric(
                v.iter()
                    .map(|d| d.as_deref().map(Numeric::parse).transpose())
                    .collect::<Result<_, _>>()?,
            ),
            P::ArrayStr(v) => Param::ArrayText(v),
            P::Interval(v) => Param::Interval(v),
            P::DbNull => Param::Null,
        })
    }

    /// The PostgreSQL types this parameter may be bound to, for the variants encoded here.
    fn accepts(&self, ty: &Type) -> bool {
        match self {
            Param::Date(_) => *ty == Type::DATE,
            Param::Time(_) => *ty == Type::TIME,
            Param::Timestamp(_) => *ty == Type::TIMESTAMP,
            Param::TimestampTz(_) => *ty == Type::TIMESTAMPTZ,
            Param::Uuid(_) => *ty == Type::UUID,
            Param::Json(_) => *ty == Type::JSON || *ty == Type::JSONB,
            Param::RangeInt32(_) => *ty == Type::INT4_RANGE,
            Param::RangeInt64(_) => *ty == Type::INT8_RANGE,
            Param::RangeNumeric(_) => *ty == Type::NUM_RANGE,
            Param::Interval(_) => *ty == Type::INTERVAL,
            // NULL binds to anything; the others delegate to tokio-postgres's own checks.
            _ => true,
        }
    }
}

fn range_to_sql<T>(
    (lower, upper): &WitRange<T>,
    element_type: &Type,
    out: &mut BytesMut,
) -> Result<IsNull, BoxError>
where
    T: ToSql,
{
    let encode = |bound: &Option<(T, RangeBoundKind)>| -> Result<_, BoxError> {
        bound
            .as_ref()
            .map(|(value, kind)| {
                let mut bytes = BytesMut::new();
                value.to_sql_checked(element_type, &mut bytes)?;
                Ok((bytes.to_vec(), matches!(kind, RangeBoundKind::Inclusive)))
            })
            .transpose()
    };
    let mut raw = Vec::new();
    wire::range_to_pg(encode(lower)?, encode(upper)?, &mut raw);
    out.extend_from_slice(&raw);
    Ok(IsNull::No)
}

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Param::Bool(v) => v.to_sql_checked(ty, out),
            Param::Char(v) => v.to_sql_checked(ty, out),
            Param::Int16(v) => v.to_sql_checked(ty, out),
            Param::Int32(v) => v.to_sql_checked(ty, out),
            Param::Int64(v) => v.to_sql_checked(ty, out),
            Param::Float32(v) => v.to_sql_checked(ty, out),
            Param::Float64(v) => v.to_sql_checked(ty, out),
            Param::Text(v) => v.to_sql_checked(ty, out),
            Param::Bytes(v) => v.to_sql_checked(ty, out),
            Param::Date(days) => {
                out.extend_from_slice(&days.to_be_bytes());
                Ok(IsNull::No)
            }
            Param::Time(micros) | Param::Timestamp(micros) | Param::TimestampTz(micros) => {
                out.extend_from_slice(&micros.to_be_bytes());
                Ok(IsNull::No)
            }
            Param::Uuid(uuid) => uuid.to_sql_checked(ty, out),
            Param::Json(text) => {
                if *ty == Type::JSONB {
                    out.extend_from_slice(&[1]);
                }
                out.extend_from_slice(text);
                Ok(IsNull::No)
            }
            Param::Numeric(v) => v.to_sql_checked(ty, out),
            Param::RangeInt32(v) => range_to_sql(v, &Type::INT4, out),
            Param::RangeInt64(v) => range_to_sql(v, &Type::INT8, out),
            Param::RangeNumeric(v) => range_to_sql(v, &Type::NUMERIC, out),
            Param::ArrayInt32(v) => v.to_sql_checked(ty, out),
            Param::ArrayInt64(v) => v.to_sql_checked(ty, out),
            Param::ArrayNumeric(v) => v.to_sql_checked(ty, out),
            Param::ArrayText(v) => v.to_sql_checked(ty, out),
            Param::Interval(v) => {
                out.extend_from_slice(&v.micros.to_be_bytes());
                out.extend_from_slice(&v.days.to_be_bytes());
                out.extend_from_slice(&v.months.to_be_bytes());
                Ok(IsNull::No)
            }
            Param::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Decided per value in `to_sql_checked`.
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if !self.accepts(ty) {
            return Err(
                format!("a {self:?} parameter cannot be bound to PostgreSQL type {ty}").into(),
            );
        }
        self.to_sql(ty, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(param: &Param, ty: &Type) -> Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        param
            .to_sql_checked(ty, &mut out)
            .map(|_| out.to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parameters_bind_only_to_the_types_spin_binds_them_to() {
        let text = Param::new(ParameterValue::Str("acme".into())).unwrap();
        assert_eq!(encode(&text, &Type::TEXT).unwrap(), b"acme");
        assert!(encode(&text, &Type::INT8).is_err());
        let ts = Param::new(ParameterValue::Timestamp(946_684_801)).unwrap();
        assert_eq!(
            encode(&ts, &Type::TIMESTAMPTZ).unwrap(),
            1_000_000i64.to_be_bytes()
        );
        assert!(encode(&ts, &Type::TIMESTAMP).is_err());
        let json = Param::new(ParameterValue::Jsonb(b"{\"a\":1}".to_vec())).unwrap();
        assert_eq!(encode(&json, &Type::JSONB).unwrap(), b"\x01{\"a\":1}");
        assert!(encode(&Param::Null, &Type::UUID).is_ok());
    }

    #[test]
    fn bad_parameters_are_named() {
        for value in [
            ParameterValue::Uuid("nope".into()),
            ParameterValue::Decimal("1e3".into()),
            ParameterValue::Date((2023, 2, 29)),
            ParameterValue::Jsonb(b"{".to_vec()),
        ] {
            assert!(Param::new(value).is_err());
        }
    }

    #[test]
    fn values_decode_like_spin() {
        assert_eq!(
            decode(&Type::TIMESTAMPTZ, &0i64.to_be_bytes()).unwrap(),
            DbValue::Datetime((2000, 1, 1, 0, 0, 0, 0))
        );
        assert_eq!(
            decode(&Type::JSONB, b"\x01{\"a\": [1, 2]}").unwrap(),
            DbValue::Jsonb(b"{\"a\":[1,2]}".to_vec())
        );
        assert_eq!(
            decode(&Type::NAME, b"weir").unwrap(),
            DbValue::Unsupported(b"weir".to_vec())
        );
        assert_eq!(data_type(&Type::NAME), DbDataType::Other("name".into()));
        let mut raw = BytesMut::new();
        Param::RangeInt32((Some((1, RangeBoundKind::Inclusive)), None))
            .to_sql_checked(&Type::INT4_RANGE, &mut raw)
            .unwrap();
        assert_eq!(
            decode(&Type::INT4_RANGE, &raw).unwrap(),
            DbValue::RangeInt32((Some((1, RangeBoundKind::Inclusive)), None))
        );
    }
}
