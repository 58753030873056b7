//! The `ramp` shorthand: one fault (its match and blast radius) and a list of magnitudes, expanded
//! into one step per magnitude, e.g. `loss: [1%, 10%, blackhole]` or `flows: [1%, 10%, 50%]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::file::{Step, duration, fault, ferr};
use crate::fault::spec::{FieldError, MAX_DELAY, percent};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampSpec {
    /// How long each step lasts.
    pub duration: String,
    /// The fault every step applies: name, match (`to`, `proto`, `dport`, ...) and, when the ramp
    /// is over `flows`, its action. Without `for`.
    pub fault: Value,
    /// Loss per step: `1%`, `10%`, ..., or `blackhole`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss: Vec<String>,
    /// Delay per step: `10ms`, `50ms`, `200ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delay: Vec<String>,
    /// Share of flows hit per step, with the template's action: `1%`, `10%`, `50%`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<String>,
}

const ACTIONS: [&str; 3] = ["loss", "blackhole", "delay"];

impl RampSpec {
    /// The steps, in order; `at` is the ramp's path (`ramp`).
    pub fn expand(&self, at: &str, margin: Duration) -> Result<Vec<Step>, FieldError> {
        let d = duration(
            &format!("{at}.duration"),
            &self.duration,
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(24 * 3600), "24h"),
        )?;
        let lists = [
            ("loss", &self.loss),
            ("delay", &self.delay),
            ("flows", &self.flows),
        ];
        let given: Vec<_> = lists.iter().filter(|(_, l)| !l.is_empty()).collect();
        let &&(key, values) = match given.as_slice() {
            [one] => one,
            _ => {
                return Err(ferr(
                    at,
                    "give exactly one list to ramp: loss: [1%, 10%, blackhole], delay: [10ms, 50ms] or flows: [1%, 10%, 50%]",
                ));
            }
        };
        let Some(template) = self.fault.as_object() else {
            return Err(ferr(
                format!("{at}.fault"),
                "a fault is a mapping: {name: ..., to: [...]}",
            ));
        };
        let has_action = ACTIONS.iter().any(|a| template.contains_key(*a));
        match (key, has_action) {
            ("flows", false) => {
                return Err(ferr(
                    format!("{at}.fault"),
                    "a ramp over flows needs the fault's action (loss, blackhole or delay)",
                ));
            }
            ("loss" | "delay", true) => {
                return Err(ferr(
                    format!("{at}.fault"),
                    format!("the ramp sets the action ({key}); remove loss/blackhole/delay here"),
                ));
            }
            _ => {}
        }
        if key == "flows" && template.contains_key("flows") {
            return Err(ferr(
                format!("{at}.fault.flows"),
                "the ramp sets flows; remove it here",
            ));
        }
        let mut steps = Vec::new();
        for (k, v) in values.iter().enumerate() {
            let vat = format!("{at}.{key}[{k}]");
            let mut f = template.clone();
            let name = match key {
                "loss" if v.trim() == "blackhole" => {
                    f.insert("blackhole".into(), Value::Bool(true));
                    "blackhole".to_string()
                }
                "loss" => {
                    if percent(&vat, v)? == 0.0 {
                        return Err(ferr(vat, format!("'{v}': must be more than 0%")));
                    }
                    f.insert("loss".into(), Value::String(v.clone()));
                    format!("loss {v}")
                }
                "delay" => {
                    duration(
                        &vat,
                        v,
                        (Duration::from_micros(1), "1us"),
                        (MAX_DELAY, "10s"),
                    )?;
                    f.insert("delay".into(), Value::String(v.clone()));
                    format!("delay {v}")
                }
                _ => {
                    percent(&vat, v)?;
                    f.insert("flows".into(), Value::String(v.clone()));
                    format!("flows {v}")
                }
            };
            let spec =
                fault(&format!("{at}.fault"), Value::Object(f), d + margin).map_err(|e| match e
                    .field
                    .strip_prefix(&format!("{at}.fault.{key}"))
                {
                    Some("") => ferr(vat.clone(), e.msg),
                    _ => e,
                })?;
            steps.push(Step {
                name,
                duration: d,
                faults: vec![spec],
            });
        }
        Ok(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(yaml: &str) -> Result<Vec<Step>, String> {
        let r: RampSpec = serde_saphyr::from_str(yaml).unwrap();
        r.expand("ramp", Duration::from_secs(5))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_loss_ramp_expands_to_one_step_per_value_up_to_a_blackhole() {
        let s = ramp(
            "duration: 10s\nfault: {name: web, to: [10.42.2.2], proto: tcp, dport: ['8080']}\nloss: [1%, 10%, blackhole]\n",
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["loss 1%", "loss 10%", "blackhole"]
        );
        assert_eq!(s[0].faults[0].loss.as_deref(), Some("1%"));
        assert!(s[2].faults[0].blackhole && s[2].faults[0].loss.is_none());
        assert_eq!(s[1].faults[0].lifetime, "15000ms");
        assert_eq!(s[1].faults[0].dport, ["8080"]);
        assert!(s.iter().all(|s| s.duration == Duration::from_secs(10)));
    }

    #[test]
    fn delay_and_flow_ramps_expand() {
        let s = ramp(
            "duration: 5s\nfault: {name: d, to: [10.42.2.0/24]}\ndelay: [10ms, 50ms, 200ms]\n",
        )
        .unwrap();
        assert_eq!(s[2].faults[0].delay.as_deref(), Some("200ms"));
        let s = ramp(
            "duration: 5s\nfault: {name: f, to: [10.42.2.0/24], blackhole: true}\nflows: [1%, 10%, 50%]\n",
        )
        .unwrap();
        assert_eq!(s[1].name, "flows 10%");
        assert_eq!(s[1].faults[0].flows.as_deref(), Some("10%"));
    }

    #[test]
    fn bad_ramps_name_the_value() {
        let e = ramp("duration: 5s\nfault: {name: w}\nloss: [1%, 150%]\n").unwrap_err();
        assert_eq!(e, "ramp.loss[1]: '150%': must be between 0% and 100%");
        let e = ramp("duration: 5s\nfault: {name: w}\ndelay: [10ms, 20s]\n").unwrap_err();
        assert_eq!(e, "ramp.delay[1]: '20s' must be between 1us and 10s");
        let e = ramp("duration: 5s\nfault: {name: w, loss: 1%}\nloss: [2%]\n").unwrap_err();
        assert!(e.starts_with("ramp.fault: the ramp sets the action"), "{e}");
        let e = ramp("duration: 5s\nfault: {name: w}\nflows: [2%]\n").unwrap_err();
        assert!(e.starts_with("ramp.fault: a ramp over flows needs"), "{e}");
        let e = ramp("duration: 5s\nfault: {name: w}\nloss: [1%]\ndelay: [1ms]\n").unwrap_err();
        assert!(e.starts_with("ramp: give exactly one list"), "{e}");
        let e = ramp("duration: 5s\nfault: {name: w, to: [10.0.0.1/8]}\nloss: [1%]\n").unwrap_err();
        assert!(
            e.starts_with("ramp.fault.to: '10.0.0.1/8' has host bits set"),
            "{e}"
        );
        let e = ramp("duration: 5s\nfault: {name: w, for: 1m}\nloss: [1%]\n").unwrap_err();
        assert!(
            e.starts_with("ramp.fault.for: set by the experiment"),
            "{e}"
        );
    }
}
