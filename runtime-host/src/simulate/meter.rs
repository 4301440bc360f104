//! Realistic meters for simulated devices: an energy counter, active power, voltage,
//! temperature and an on/off/fault state, each with the metadata a real logger would send.

use serde_json::{Value as Json, json};

/// The keys every simulated device reports, with their metadata.
pub fn metadata() -> Json {
    json!([
        {"key": "meter.energy.total", "type": "u64", "name": "Energy", "unit": "Wh",
         "description": "Cumulative active energy import"},
        {"key": "meter.power", "type": "f64", "name": "Power", "unit": "W", "min": -50000.0, "max": 50000.0,
         "description": "Active power, positive when importing"},
        {"key": "meter.voltage.l1", "type": "f32", "name": "Voltage L1", "unit": "V", "min": 0.0, "max": 480.0},
        {"key": "cabinet.temperature", "type": "i16", "name": "Cabinet temperature", "unit": "Cel",
         "min": -40, "max": 125},
        {"key": "pump.state", "type": "enum", "name": "Pump state",
         "value_map": {"0": "off", "1": "on", "2": "fault"}}
    ])
}

/// Points per reading round (one per meter).
pub const POINTS_PER_ROUND: usize = 5;

/// The evolving state of one device's meters.
pub struct Meters {
    energy_wh: u64,
    power_w: f64,
    voltage_v: f64,
    temperature_c: f64,
    pump_on: bool,
    rng: u64,
}

impl Meters {
    /// Meters seeded per device so devices differ but runs are repeatable.
    pub fn new(seed: u64) -> Self {
        let mut meters = Meters {
            energy_wh: 1_000_000 + seed * 7919,
            power_w: 1500.0,
            voltage_v: 230.0,
            temperature_c: 21.0,
            pump_on: true,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        };
        meters.power_w += meters.uniform() * 500.0;
        meters
    }

    /// One reading of every meter at `ts` (unix ms), `seconds` after the previous one.
    pub fn read(&mut self, ts: i64, seconds: f64) -> [Json; POINTS_PER_ROUND] {
        self.power_w = (self.power_w + self.uniform() * 100.0).clamp(0.0, 20_000.0);
        self.energy_wh += (self.power_w * seconds / 3600.0).round() as u64;
        self.voltage_v = (self.voltage_v + self.uniform() * 0.5).clamp(207.0, 253.0);
        self.temperature_c = (self.temperature_c + self.uniform() * 0.2).clamp(-10.0, 60.0);
        if self.uniform() > 0.98 {
            self.pump_on = !self.pump_on;
        }
        let state = if self.uniform() > 0.999 {
            2
        } else {
            u8::from(self.pump_on)
        };
        [
            json!({"key": "meter.energy.total", "value": self.energy_wh, "ts": ts}),
            json!({"key": "meter.power", "value": (self.power_w * 10.0).round() / 10.0, "ts": ts}),
            json!({"key": "meter.voltage.l1", "value": (self.voltage_v * 10.0).round() / 10.0, "ts": ts}),
            json!({"key": "cabinet.temperature", "value": self.temperature_c.round() as i64, "ts": ts}),
            json!({"key": "pump.state", "value": state, "ts": ts}),
        ]
    }

    /// A uniform number in [-1, 1) from a xorshift generator (no dependency needed).
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}
