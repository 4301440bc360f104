//! The units a key's metadata may name: the recommended SenML units of RFC 8428 plus a few
//! practical extras (`kWh`, `Wh`, `/10`...).

/// Every accepted unit symbol.
pub const UNITS: &[&str] = &[
    "m", "kg", "s", "A", "K", "cd", "mol", "Hz", "rad", "sr", "N", "Pa", "J", "W", "C", "V", "F",
    "Ohm", "S", "Wb", "T", "H", "Cel", "lm", "lx", "Bq", "Gy", "Sv", "kat", "m2", "m3", "m/s",
    "m/s2", "m3/s", "W/m2", "cd/m2", "bit", "bit/s", "lat", "lon", "pH", "dB", "dBW", "count", "/",
    "%RH", "%EL", "EL", "1/s", "beats", "S/m", "B", "VA", "VAs", "var", "vars", "J/m", "kg/m3",
    "/10", "/100", "/1000", "/100000", "/1000000", "kWh", "Wh",
];

/// Whether `unit` is an accepted unit symbol (case-sensitive, as in SenML).
pub fn is_known_unit(unit: &str) -> bool {
    UNITS.contains(&unit)
}
