//! The Prometheus probe: a PromQL instant query against a real Prometheus's HTTP API
//! (`/api/v1/query`), its one number compared with `min`/`max`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Outcome,
    http::{Url, get, url},
    num,
};
use crate::{
    experiment::file::{duration, ferr},
    fault::spec::FieldError,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromSpec {
    /// The server: `http://127.0.0.1:9090`.
    pub url: String,
    /// PromQL that yields one number (a scalar, or a vector of one series: aggregate with sum/max).
    pub query: String,
    /// The value must be at least this.
    #[serde(default)]
    pub min: Option<f64>,
    /// The value must be at most this.
    #[serde(default)]
    pub max: Option<f64>,
    /// The value of an empty result (default: an empty result fails).
    #[serde(default)]
    pub if_empty: Option<f64>,
    /// Default 2s.
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Prom {
    pub url: Url,
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub if_empty: Option<f64>,
    pub timeout: Duration,
}

impl PromSpec {
    pub fn validate(&self, at: &str) -> Result<Prom, FieldError> {
        if self.min.is_none() && self.max.is_none() {
            return Err(ferr(
                at,
                "give min, max or both: the value the query's result is compared with",
            ));
        }
        if self.query.trim().is_empty() {
            return Err(ferr(
                format!("{at}.query"),
                "empty; write PromQL, e.g. sum(up)",
            ));
        }
        Ok(Prom {
            url: url(&format!("{at}.url"), &self.url)?,
            query: self.query.clone(),
            min: self.min,
            max: self.max,
            if_empty: self.if_empty,
            timeout: duration(
                &format!("{at}.timeout"),
                self.timeout.as_deref().unwrap_or("2s"),
                (Duration::from_millis(1), "1ms"),
                (Duration::from_secs(60), "60s"),
            )?,
        })
    }
}

/// Percent-encodes a query parameter (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(char::from(b));
        } else {
            o += &format!("%{b:02X}");
        }
    }
    o
}

/// The one number of an instant query's answer; `Ok(None)` for an empty vector.
pub fn value(body: &str) -> Result<Option<f64>, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not Prometheus's JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            v["error"].as_str().unwrap_or("no error given")
        ));
    }
    let d = &v["data"];
    let sample = match d["resultType"].as_str() {
        Some("scalar") => &d["result"],
        Some("vector") => {
            let r = d["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            match r {
                [] => return Ok(None),
                [one] => &one["value"],
                many => {
                    return Err(format!(
                        "{} series; aggregate the query to one (sum, max, ...)",
                        many.len()
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "a {other:?} result; use an instant vector or scalar"
            ));
        }
    };
    let s = sample[1].as_str().ok_or("no value in the result")?;
    s.parse::<f64>()
        .map(Some)
        .map_err(|_| format!("'{s}' is not a number"))
}

impl Prom {
    pub fn threshold(&self) -> String {
        match (self.min, self.max) {
            (Some(a), Some(b)) => format!("{} .. {}", num(a), num(b)),
            (Some(a), None) => format!(">= {}", num(a)),
            (None, Some(b)) => format!("<= {}", num(b)),
            (None, None) => String::new(),
        }
    }

    pub fn run(&self) -> Outcome {
        let path = format!("/api/v1/query?query={}", encode(&self.query));
        let got = get(&self.url, &path, self.timeout).and_then(|g| {
            if g.status == 200 {
                value(&g.body)
            } else {
                Err(format!(
                    "HTTP {}: {}",
                    g.status,
                    value(&g.body).err().unwrap_or_default()
                ))
            }
        });
        match got.map(|v| v.or(self.if_empty)) {
            Ok(Some(v)) => {
                let ok = self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m);
                Outcome {
                    value: Some(v),
                    ok,
                    latency_ms: None,
                    detail: num(v),
                }
            }
            Ok(None) => Outcome {
                value: None,
                ok: false,
                latency_ms: None,
                detail: "no series (set if_empty to give an empty result a value)".into(),
            },
            Err(e) => Outcome {
                value: None,
                ok: false,
                latency_ms: None,
                detail: e,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read() {
        let v = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"42.5"]}]}}"#;
        assert_eq!(value(v), Ok(Some(42.5)));
        let s = r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(value(s), Ok(Some(3.0)));
        let e = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(value(e), Ok(None));
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#;
        assert!(value(two).unwrap_err().starts_with("2 series"));
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(value(bad), Err("query failed: parse error".into()));
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            encode(r#"sum(rate(x{a="b"}[5s]))"#),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B5s%5D%29%29"
        );
    }
}
