//! The `ramp` shorthand: one fault (its match and blast radius) and a list of magnitudes, expanded
//! into one step per magnitude, e.g. `loss: [1%, 10%, blackhole]` or `flows: [1%, 10%, 50%]`; with
//! Kubernetes targets also a list of blast radii over a side's pods: `pods: [one, 25%, all]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::file::{Step, Targets, duration, fault, ferr};
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
    /// Kubernetes targets: how many of a side's selected pods per step, with the template's
    /// action: `one`, a count (`2`), a share (`25%`) or `all` (the side's `mode`/`value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// The side whose pods `pods` counts: `from` or `to` (default: the one that selects pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
}

const ACTIONS: [&str; 7] = [
    "loss",
    "blackhole",
    "delay",
    "reject",
    "duplicate",
    "corrupt",
    "rate",
];

/// `one`, `3`, `25%`, `all` -> the side's `mode` and `value`.
fn radius(at: &str, v: &str) -> Result<(&'static str, Option<u32>), FieldError> {
    let v = v.trim();
    let bad = || {
        ferr(
            at,
            format!("'{v}': write one, a number of pods (2), a share of them (25%) or all"),
        )
    };
    match v {
        "one" => Ok(("one", None)),
        "all" => Ok(("all", None)),
        _ => match v.strip_suffix('%') {
            Some(p) => {
                let n: u32 = p.trim().parse().map_err(|_| bad())?;
                if !(1..=100).contains(&n) {
                    return Err(ferr(
                        at,
                        format!("'{v}': a share of the pods from 1% to 100%"),
                    ));
                }
                Ok(("percent", Some(n)))
            }
            None => match v.parse::<u32>() {
                Ok(0) => Err(ferr(at, "'0': at least one pod")),
                Ok(n) => Ok(("fixed", Some(n))),
                Err(_) => Err(bad()),
            },
        },
    }
}

impl RampSpec {
    /// The steps, in order; `at` is the ramp's path (`ramp`).
    pub fn expand(
        &self,
        targets: Targets,
        at: &str,
        margin: Duration,
    ) -> Result<Vec<Step>, FieldError> {
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
            ("pods", &self.pods),
        ];
        let given: Vec<_> = lists.iter().filter(|(_, l)| !l.is_empty()).collect();
        let &&(key, values) = match given.as_slice() {
            [one] => one,
            _ => {
                return Err(ferr(
                    at,
                    "give exactly one list to ramp: loss: [1%, 10%, blackhole], delay: [10ms, 50ms], flows: [1%, 10%, 50%] or (Kubernetes targets) pods: [one, 25%, all]",
                ));
            }
        };
        if key == "pods" && targets != Targets::Kubernetes {
            return Err(ferr(
                format!("{at}.pods"),
                "ramps over pods need Kubernetes targets (targets: kubernetes); node-level faults choose flows: ramp flows instead",
            ));
        }
        if self.side.is_some() && key != "pods" {
            return Err(ferr(
                format!("{at}.side"),
                "side says which side's pods a pods ramp counts; remove it",
            ));
        }
        let Some(template) = self.fault.as_object() else {
            return Err(ferr(
                format!("{at}.fault"),
                "a fault is a mapping: {name: ..., to: [...]}",
            ));
        };
        let has_action = ACTIONS.iter().any(|a| template.contains_key(*a));
        match (key, has_action) {
            ("flows" | "pods", false) => {
                return Err(ferr(
                    format!("{at}.fault"),
                    format!(
                        "a ramp over {key} needs the fault's action (loss, blackhole, delay, ...)"
                    ),
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
        let side = match key {
            "pods" => Some(self.pods_side(at, template)?),
            _ => None,
        };
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
                "pods" => {
                    let side = side.unwrap_or("to");
                    let (mode, value) = radius(&vat, v)?;
                    let t = f
                        .get_mut(side)
                        .and_then(Value::as_object_mut)
                        .expect("pods_side checked it");
                    t.insert("mode".into(), Value::String(mode.into()));
                    match value {
                        Some(n) => t.insert("value".into(), n.into()),
                        None => t.remove("value"),
                    };
                    format!("{side} pods {}", v.trim())
                }
                _ => {
                    percent(&vat, v)?;
                    f.insert("flows".into(), Value::String(v.clone()));
                    format!("flows {v}")
                }
            };
            let spec = fault(
                targets,
                &format!("{at}.fault"),
                Value::Object(f),
                d + margin,
            )
            .map_err(
                |e| match e.field.strip_prefix(&format!("{at}.fault.{key}")) {
                    Some("") => ferr(vat.clone(), e.msg),
                    _ => e,
                },
            )?;
            steps.push(Step {
                name,
                duration: d,
                faults: vec![spec],
            });
        }
        Ok(steps)
    }

    /// The side a pods ramp counts: `side`, else the one side of the template that selects pods
    /// or a Service; it must not set `mode`/`value` itself.
    fn pods_side(
        &self,
        at: &str,
        template: &serde_json::Map<String, Value>,
    ) -> Result<&'static str, FieldError> {
        let picks = |s: &str| {
            template
                .get(s)
                .is_some_and(|t| t.get("pods").is_some() || t.get("service").is_some())
        };
        let side = match self.side.as_deref() {
            Some("from") => "from",
            Some("to") => "to",
            Some(other) => {
                return Err(ferr(
                    format!("{at}.side"),
                    format!("'{other}': write from or to"),
                ));
            }
            None => match (picks("from"), picks("to")) {
                (_, true) if !picks("from") => "to",
                (true, false) => "from",
                (true, true) => {
                    return Err(ferr(
                        format!("{at}.side"),
                        "both sides select pods: say which one the ramp counts (side: to)",
                    ));
                }
                _ => "to",
            },
        };
        if !picks(side) {
            return Err(ferr(
                format!("{at}.fault.{side}"),
                "a ramp over pods needs this side to select pods or a Service",
            ));
        }
        for k in ["mode", "value"] {
            if template[side].get(k).is_some() {
                return Err(ferr(
                    format!("{at}.fault.{side}.{k}"),
                    "the ramp sets the blast radius; remove it here",
                ));
            }
        }
        Ok(side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(yaml: &str) -> Result<Vec<Step>, String> {
        let r: RampSpec = serde_saphyr::from_str(yaml).unwrap();
        r.expand(Targets::Nodes, "ramp", Duration::from_secs(5))
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
        assert_eq!(s[0].faults[0].node().loss.as_deref(), Some("1%"));
        assert!(s[2].faults[0].node().blackhole && s[2].faults[0].node().loss.is_none());
        assert_eq!(s[1].faults[0].node().lifetime, "15000ms");
        assert_eq!(s[1].faults[0].node().dport, ["8080"]);
        assert!(s.iter().all(|s| s.duration == Duration::from_secs(10)));
    }

    #[test]
    fn delay_and_flow_ramps_expand() {
        let s = ramp(
            "duration: 5s\nfault: {name: d, to: [10.42.2.0/24]}\ndelay: [10ms, 50ms, 200ms]\n",
        )
        .unwrap();
        assert_eq!(s[2].faults[0].node().delay.as_deref(), Some("200ms"));
        let s = ramp(
            "duration: 5s\nfault: {name: f, to: [10.42.2.0/24], blackhole: true}\nflows: [1%, 10%, 50%]\n",
        )
        .unwrap();
        assert_eq!(s[1].name, "flows 10%");
        assert_eq!(s[1].faults[0].node().flows.as_deref(), Some("10%"));
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
