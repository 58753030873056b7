//! `fault add`: a NetworkFault built from flags and validated by the resource's own checks, with
//! every error renamed to the flag the user typed (`spec.to.ports` -> `--to-ports`).

use crate::{
    fault::spec::FieldError,
    k8s::resource::{
        LabelSelector, NetworkFault, NetworkFaultSpec, PodSelector, ServiceRef, Target,
    },
};

use super::{
    args::AddArgs,
    target::{Parsed, parse_mode, parse_selector, parse_target},
};

/// A side's flags: `--to`, `--to-ns`, `--to-ns-selector`, `--to-ports`, `--to-except`, `--to-mode`.
struct SideFlags<'a> {
    side: &'a str,
    target: Option<&'a str>,
    ns: &'a [String],
    ns_selector: Option<&'a str>,
    ports: &'a [String],
    except: &'a [String],
    mode: Option<&'a str>,
}

impl SideFlags<'_> {
    fn flag(&self, suffix: &str) -> String {
        format!("--{}{suffix}", self.side)
    }

    fn build(&self) -> Result<Option<Target>, FieldError> {
        let parsed = self
            .target
            .map(|t| parse_target(&self.flag(""), t))
            .transpose()?;
        let (mode, value) = match self.mode {
            Some(m) => parse_mode(&self.flag("-mode"), m)?,
            None => Default::default(),
        };
        let ns_selector = self
            .ns_selector
            .map(|s| parse_selector(&self.flag("-ns-selector"), s))
            .transpose()?;
        let by_ns = !self.ns.is_empty() || ns_selector.is_some();
        let mut t = Target {
            ports: self.ports.to_vec(),
            except: self.except.to_vec(),
            mode,
            value,
            ..Target::default()
        };
        let pods = |labels: LabelSelector| PodSelector {
            labels,
            namespaces: self.ns.to_vec(),
            namespace_selector: ns_selector.clone(),
        };
        match parsed {
            None if by_ns => t.pods = Some(pods(LabelSelector::default())),
            Some(Parsed::Pods(sel)) => t.pods = Some(pods(sel)),
            _ if by_ns => {
                let which = if self.ns.is_empty() {
                    "-ns-selector"
                } else {
                    "-ns"
                };
                let (what, fix) = match parsed {
                    Some(Parsed::Service { .. }) => (
                        "names a Service",
                        "write svc/NAMESPACE/NAME instead".to_string(),
                    ),
                    _ => (
                        "gives addresses",
                        format!(
                            "select pods by labels in {} (e.g. app=db), or remove {}",
                            self.flag(""),
                            self.flag(which)
                        ),
                    ),
                };
                return Err(FieldError {
                    field: self.flag(which),
                    msg: format!(
                        "namespaces choose pods, and {} {what}; {fix}",
                        self.flag("")
                    ),
                });
            }
            Some(Parsed::Service { name, namespace }) => {
                t.service = Some(ServiceRef { name, namespace })
            }
            Some(Parsed::Cidrs(c)) => t.cidrs = Some(c),
            Some(Parsed::Any) => t.any = true,
            None if t == Target::default() => return Ok(None),
            None => t.any = true,
        }
        Ok(Some(t))
    }
}

/// The flag (or `NAME`) a resource field came from, as the user typed it.
pub fn flag_of(field: &str) -> String {
    if field == "metadata.name" {
        return "NAME".into();
    }
    let f = field.strip_prefix("spec").unwrap_or(field);
    let f = f.strip_prefix('.').unwrap_or(f);
    if f.is_empty() {
        return "--loss/--blackhole/--delay".into();
    }
    for side in ["from", "to"] {
        let Some(rest) = f.strip_prefix(side) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('.')) {
            continue;
        }
        let rest = rest.trim_start_matches('.');
        let suffix = if rest.starts_with("except") {
            "-except"
        } else if rest.starts_with("ports") {
            "-ports"
        } else if rest.starts_with("mode") || rest.starts_with("value") {
            "-mode"
        } else if rest.starts_with("pods.namespaceSelector") {
            "-ns-selector"
        } else if rest.starts_with("pods.namespaces") {
            "-ns"
        } else {
            ""
        };
        return format!("--{side}{suffix}");
    }
    match f {
        "duration" => "--for".into(),
        "bothWays" => "--both-ways".into(),
        "dryRun" => "--dry-run".into(),
        "dnsNames" => "--dns-name".into(),
        // rejectWith -> --reject-with, lossModel -> --loss-model
        other => other.chars().fold("--".to_string(), |mut s, c| {
            if c.is_ascii_uppercase() {
                s.push('-');
            }
            s.push(c.to_ascii_lowercase());
            s
        }),
    }
}

/// `spec.loss: '150%': ...` -> `--loss: '150%': ...`.
pub fn as_flags(e: &FieldError) -> String {
    format!("{}: {}", flag_of(&e.field), e.msg)
}

/// A Kubernetes object name (DNS-1123 subdomain): what the API server takes as a name.
pub fn check_name(what: &str, n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: '{n}' is not a resource name; use a-z, 0-9, '-' and '.' (e.g. checkout-db)"
        ))
    }
}

/// The NetworkFault `fault add` creates in `namespace`, validated; the error names the flag.
pub fn build(a: &AddArgs, namespace: &str) -> Result<NetworkFault, String> {
    check_name("NAME", &a.name)?;
    let from = SideFlags {
        side: "from",
        target: a.from.as_deref(),
        ns: &a.from_ns,
        ns_selector: a.from_ns_selector.as_deref(),
        ports: &a.from_ports,
        except: &a.from_except,
        mode: a.from_mode.as_deref(),
    };
    let to = SideFlags {
        side: "to",
        target: a.to.as_deref(),
        ns: &a.to_ns,
        ns_selector: a.to_ns_selector.as_deref(),
        ports: &a.to_ports,
        except: &a.to_except,
        mode: a.to_mode.as_deref(),
    };
    let spec = NetworkFaultSpec {
        from: from.build().map_err(|e| e.to_string())?,
        to: to.build().map_err(|e| e.to_string())?,
        proto: a.proto.as_ref().map(|p| p.trim().to_ascii_lowercase()),
        both_ways: a.both_ways,
        loss: a.loss.clone(),
        burst: a.burst.clone(),
        loss_model: a.loss_model.clone(),
        blackhole: a.blackhole,
        reject: a.reject,
        reject_with: a.reject_with.clone(),
        duplicate: a.duplicate.clone(),
        corrupt: a.corrupt.clone(),
        rate: a.rate.clone(),
        rate_burst: a.rate_burst.clone(),
        dns: a.dns.clone(),
        dns_names: a.dns_name.clone(),
        delay: a.delay.clone(),
        jitter: a.jitter.clone(),
        reorder: a.reorder.clone(),
        pulse: a.pulse.clone(),
        flows: a.flows.clone(),
        seed: a.seed,
        duration: a.lifetime.clone(),
        dry_run: a.dry_run,
    };
    spec.validate().map_err(|e| as_flags(&e))?;
    let mut nf = NetworkFault::new(&a.name, spec);
    nf.metadata.namespace = Some(namespace.to_string());
    Ok(nf)
}
