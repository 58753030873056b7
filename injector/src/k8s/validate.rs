//! A NetworkFault's checks beyond its schema (`spec.<field>: value and fix`), and the one mapping
//! from its spec to a node-level [`FaultSpec`]: the action is judged by FaultSpec's own validation.

use crate::fault::spec::{FaultSpec, FieldError, port_range};

use super::resource::{LabelSelector, Mode, NetworkFaultSpec, Operator, Target};

pub(crate) fn fe(field: impl Into<String>, msg: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        msg: msg.into(),
    }
}

/// One side of a node-level fault: addresses (empty: any), exceptions, ports, and the protocol a
/// Service's port brings (None: the spec's).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Side {
    pub cidrs: Vec<String>,
    pub except: Vec<String>,
    pub ports: Vec<String>,
    pub proto: Option<String>,
}

/// Where FaultSpec's field names land in the resource.
fn resource_field(fault_field: &str) -> String {
    let f = match fault_field {
        "from" => "from.cidrs",
        "to" => "to.cidrs",
        "from_except" => "from.except",
        "to_except" => "to.except",
        "sport" => "from.ports",
        "dport" => "to.ports",
        "for" => "duration",
        "both_ways" => "bothWays",
        "dry_run" => "dryRun",
        "reject_with" => "rejectWith",
        "loss_model" => "lossModel",
        "rate_burst" => "rateBurst",
        "dns_name" => "dnsNames",
        "action" => return "spec".into(),
        other => other,
    };
    format!("spec.{f}")
}

impl NetworkFaultSpec {
    /// The node-level fault `name` between `from` and `to`, living `lifetime`.
    pub(crate) fn node_fault(
        &self,
        name: &str,
        from: &Side,
        to: &Side,
        lifetime: &str,
    ) -> FaultSpec {
        FaultSpec {
            name: name.to_string(),
            from: from.cidrs.clone(),
            to: to.cidrs.clone(),
            from_except: from.except.clone(),
            to_except: to.except.clone(),
            proto: self
                .proto
                .clone()
                .or_else(|| from.proto.clone())
                .or_else(|| to.proto.clone()),
            sport: from.ports.clone(),
            dport: to.ports.clone(),
            both_ways: self.both_ways,
            loss: self.loss.clone(),
            burst: self.burst.clone(),
            loss_model: self.loss_model.clone(),
            blackhole: self.blackhole,
            delay: self.delay.clone(),
            jitter: self.jitter.clone(),
            reorder: self.reorder.clone(),
            reject: self.reject,
            reject_with: self.reject_with.clone(),
            duplicate: self.duplicate.clone(),
            corrupt: self.corrupt.clone(),
            rate: self.rate.clone(),
            rate_burst: self.rate_burst.clone(),
            dns: self.dns.clone(),
            dns_name: self.dns_names.clone(),
            pulse: self.pulse.clone(),
            flows: self.flows.clone(),
            seed: self.seed,
            lifetime: lifetime.to_string(),
            dry_run: self.dry_run,
        }
    }

    /// The action fields as a node-level fault's (no match, no name): for the action's text
    /// and table columns.
    pub fn action_spec(&self) -> FaultSpec {
        self.node_fault("", &Side::default(), &Side::default(), &self.duration)
    }

    /// Validates `fault` (built by [`Self::node_fault`]) with FaultSpec's own checks, the error
    /// renamed to the resource's field (`for` is `spec.duration`, `dport` is `spec.to.ports`, ...).
    pub(crate) fn judge(fault: &FaultSpec) -> Result<(), FieldError> {
        fault
            .validate("")
            .map(drop)
            .map_err(|e| fe(resource_field(&e.field), e.msg))
    }

    /// Every check the schema cannot make (and the ones it makes, for resources that did not pass
    /// through it), with the messages of `injector fault add`. Errors name `spec.<field>`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let from = side_for_check("spec.from", self.from.as_ref())?;
        let to = side_for_check("spec.to", self.to.as_ref())?;
        let probe = self.node_fault("probe", &from, &to, &self.duration);
        Self::judge(&probe)
    }
}

/// Checks one side and returns what FaultSpec can judge of it: its CIDRs, exceptions and
/// numeric ports (a Service's ports are checked here: they are mapped before they reach a fault).
fn side_for_check(at: &str, t: Option<&Target>) -> Result<Side, FieldError> {
    let Some(t) = t else {
        return Ok(Side::default());
    };
    let given = [
        ("pods", t.pods.is_some()),
        ("service", t.service.is_some()),
        ("cidrs", t.cidrs.is_some()),
        ("any", t.any),
    ];
    let chosen: Vec<&str> = given.iter().filter(|g| g.1).map(|g| g.0).collect();
    if chosen.len() != 1 {
        let what = if chosen.is_empty() {
            "none".to_string()
        } else {
            chosen.join(" and ")
        };
        return Err(fe(
            at,
            format!("{what} given: give exactly one of pods, service, cidrs or any: true"),
        ));
    }
    let picks_pods = t.pods.is_some() || t.service.is_some();
    if !t.except.is_empty() && picks_pods {
        return Err(fe(
            format!("{at}.except"),
            "exceptions apply to cidrs or any; select fewer pods with labels instead",
        ));
    }
    mode(at, t, picks_pods)?;
    if let Some(p) = &t.pods {
        pods(&format!("{at}.pods"), p)?;
    }
    let mut side = Side {
        cidrs: t.cidrs.clone().unwrap_or_default(),
        except: t.except.clone(),
        ..Side::default()
    };
    if let Some(s) = &t.service {
        dns_label(&format!("{at}.service.name"), &s.name)?;
        if let Some(ns) = &s.namespace {
            dns_label(&format!("{at}.service.namespace"), ns)?;
        }
        for p in t.ports.iter().filter(|p| numeric(p)) {
            if p.contains('-') {
                return Err(fe(
                    format!("{at}.ports"),
                    format!("'{p}': a Service's ports are given one by one, by name or number"),
                ));
            }
            port_range(&format!("{at}.ports"), p)?;
        }
        return Ok(side);
    }
    if let Some(p) = t.ports.iter().find(|p| !numeric(p)) {
        return Err(fe(
            format!("{at}.ports"),
            format!(
                "'{p}' is a port name; names refer to a Service's ports, write a number or range here"
            ),
        ));
    }
    if t.cidrs.as_ref().is_some_and(Vec::is_empty) {
        return Err(fe(
            format!("{at}.cidrs"),
            "empty list; list at least one CIDR, or write any: true",
        ));
    }
    side.ports = t.ports.clone();
    Ok(side)
}

/// A port or range (`5432`, `8000-8080`) rather than a port's name.
pub(crate) fn numeric(p: &str) -> bool {
    p.bytes().all(|c| c.is_ascii_digit() || c == b'-')
}

fn mode(at: &str, t: &Target, picks_pods: bool) -> Result<(), FieldError> {
    let name = format!("{:?}", t.mode).to_lowercase();
    if !t.mode.is_all() && !picks_pods {
        return Err(fe(
            format!("{at}.mode"),
            format!("'{name}' chooses among pods; use it with pods or service, or remove it"),
        ));
    }
    let v = format!("{at}.value");
    match (t.mode, t.value) {
        (Mode::All | Mode::One, Some(n)) => Err(fe(
            v,
            format!("'{n}': only modes fixed and percent take a value; remove it"),
        )),
        (Mode::Fixed | Mode::Percent, None) => Err(fe(
            v,
            format!("mode {name} needs a value (e.g. value: 1 or value: 30)"),
        )),
        (Mode::Fixed, Some(0)) => Err(fe(v, "'0': fixed takes 1 or more pods")),
        (Mode::Percent, Some(n)) if !(1..=100).contains(&n) => Err(fe(
            v,
            format!("'{n}': percent takes 1 to 100 (% of the selected pods, rounded up)"),
        )),
        _ => Ok(()),
    }
}

fn pods(at: &str, p: &super::resource::PodSelector) -> Result<(), FieldError> {
    if !p.namespaces.is_empty() && p.namespace_selector.is_some() {
        return Err(fe(
            format!("{at}.namespaces"),
            "give namespaces or namespaceSelector, not both",
        ));
    }
    for (i, n) in p.namespaces.iter().enumerate() {
        dns_label(&format!("{at}.namespaces[{i}]"), n)?;
    }
    selector(at, &p.labels)?;
    if let Some(ns) = &p.namespace_selector {
        selector(&format!("{at}.namespaceSelector"), ns)?;
    }
    Ok(())
}

/// Label keys and values as Kubernetes allows them, so the selector strings the daemon watches
/// with are never refused by the API server.
fn selector(at: &str, s: &LabelSelector) -> Result<(), FieldError> {
    for (k, v) in &s.match_labels {
        label_key(&format!("{at}.matchLabels"), k)?;
        label_value(&format!("{at}.matchLabels[{k}]"), v)?;
    }
    for (i, r) in s.match_expressions.iter().enumerate() {
        let f = format!("{at}.matchExpressions[{i}]");
        label_key(&format!("{f}.key"), &r.key)?;
        match (r.operator, r.values.is_empty()) {
            (Operator::In | Operator::NotIn, true) => {
                return Err(fe(
                    format!("{f}.values"),
                    format!("{:?} needs at least one value", r.operator),
                ));
            }
            (Operator::Exists | Operator::DoesNotExist, false) => {
                return Err(fe(
                    format!("{f}.values"),
                    format!("{:?} takes no values; remove them", r.operator),
                ));
            }
            _ => {}
        }
        for v in &r.values {
            label_value(&format!("{f}.values"), v)?;
        }
    }
    Ok(())
}

fn name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn label_key(at: &str, k: &str) -> Result<(), FieldError> {
    let (prefix, name) = k.rsplit_once('/').unwrap_or(("", k));
    let prefix_ok = prefix.is_empty()
        || (prefix.len() <= 253
            && prefix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.')));
    if !prefix_ok || !name_part(name) {
        return Err(fe(
            at,
            format!(
                "'{k}' is not a label key; write [prefix/]name, name up to 63 of a-z A-Z 0-9 - _ . (e.g. app)"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn label_value(at: &str, v: &str) -> Result<(), FieldError> {
    if !v.is_empty() && !name_part(v) {
        return Err(fe(
            at,
            format!(
                "'{v}' is not a label value; use up to 63 of a-z A-Z 0-9 - _ . starting and ending alphanumeric"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn dns_label(at: &str, v: &str) -> Result<(), FieldError> {
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if !ok {
        return Err(fe(
            at,
            format!("'{v}' is not a name; use 1-63 of a-z, 0-9 and '-' (e.g. payments)"),
        ));
    }
    Ok(())
}
