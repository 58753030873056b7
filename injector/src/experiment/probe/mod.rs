//! Steady-state probes: their spec and validation, the sample each run yields, and one thread per
//! probe (inside the probe's network namespace) that runs it on its interval or when kicked.

pub mod command;
pub mod http;
pub mod pod;
pub mod prometheus;

use std::{
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::file::{Targets, duration, ferr};
use crate::fault::spec::FieldError;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    pub name: String,
    /// Time between runs (default: the file's probe_interval).
    #[serde(default)]
    pub interval: Option<String>,
    /// Run from inside this network namespace: a name under /run/netns (a pod's, a node's) or a
    /// path (/proc/PID/ns/net); default: the runner's.
    #[serde(default)]
    pub netns: Option<String>,
    /// With Kubernetes targets: run from inside this pod's netns, `namespace/name` (found through
    /// the API server; the runner must be on the pod's node, see docs/experiments.md).
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub http: Option<http::HttpSpec>,
    #[serde(default)]
    pub prometheus: Option<prometheus::PromSpec>,
    #[serde(default)]
    pub command: Option<command::CommandSpec>,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Http(http::Http),
    Prometheus(prometheus::Prom),
    Command(command::Command),
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub name: String,
    pub interval: Duration,
    /// The netns it runs in (for a `pod` probe: set when the run starts, from the pod).
    pub netns: Option<String>,
    /// `namespace/name` of the pod it runs in, if any.
    pub pod: Option<String>,
    pub kind: Kind,
}

impl Probe {
    /// `http`, `prometheus`, `command`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Http(_) => "http",
            Kind::Prometheus(_) => "prometheus",
            Kind::Command(_) => "command",
        }
    }

    /// What a sample's value is compared with, in words: `>= 80% ok (200, <= 500ms)`.
    pub fn threshold(&self) -> String {
        match &self.kind {
            Kind::Http(h) => h.threshold(),
            Kind::Prometheus(p) => p.threshold(),
            Kind::Command(c) => c.threshold(),
        }
    }

    /// The value's unit for charts (`%`, `` for a query, `exit`).
    pub fn unit(&self) -> &'static str {
        match self.kind {
            Kind::Http(_) => "% ok",
            Kind::Prometheus(_) => "",
            Kind::Command(_) => "exit code",
        }
    }

    /// The value a sample must stay above (`Some((v, true))`) or below (`Some((v, false))`),
    /// for the chart's threshold line(s).
    pub fn limits(&self) -> Vec<(f64, bool)> {
        match &self.kind {
            Kind::Http(h) => vec![(h.min_success * 100.0, true)],
            Kind::Prometheus(p) => p
                .min
                .map(|m| (m, true))
                .into_iter()
                .chain(p.max.map(|m| (m, false)))
                .collect(),
            Kind::Command(c) => vec![(f64::from(c.exit), false)],
        }
    }

    fn run(&self) -> Outcome {
        match &self.kind {
            Kind::Http(h) => h.run(),
            Kind::Prometheus(p) => p.run(),
            Kind::Command(c) => c.run(),
        }
    }
}

impl ProbeSpec {
    pub fn validate(
        &self,
        at: &str,
        default_interval: Duration,
        targets: Targets,
    ) -> Result<Probe, FieldError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(ferr(
                format!("{at}.name"),
                format!(
                    "'{}': use 1-63 characters of letters, digits, '-', '_', '.'",
                    self.name
                ),
            ));
        }
        let interval = match &self.interval {
            None => default_interval,
            Some(v) => duration(
                &format!("{at}.interval"),
                v,
                (Duration::from_millis(100), "100ms"),
                (Duration::from_secs(3600), "1h"),
            )?,
        };
        if let Some(ns) = &self.netns {
            let path = netns_path(ns);
            if !std::path::Path::new(&path).exists() {
                return Err(ferr(
                    format!("{at}.netns"),
                    format!("'{ns}': {path} does not exist; `ip netns list` shows the names"),
                ));
            }
        }
        if let Some(p) = &self.pod {
            pod::check(&format!("{at}.pod"), p, targets)?;
            if self.netns.is_some() {
                return Err(ferr(
                    format!("{at}.pod"),
                    "give pod or netns, not both (a pod's netns is found from the pod)",
                ));
            }
        }
        let kind = match (&self.http, &self.prometheus, &self.command) {
            (Some(h), None, None) => Kind::Http(h.validate(&format!("{at}.http"))?),
            (None, Some(p), None) => Kind::Prometheus(p.validate(&format!("{at}.prometheus"))?),
            (None, None, Some(c)) => Kind::Command(c.validate(&format!("{at}.command"))?),
            _ => {
                return Err(ferr(at, "give exactly one of http, prometheus or command"));
            }
        };
        Ok(Probe {
            name: self.name.clone(),
            interval,
            netns: self.netns.clone(),
            pod: self.pod.clone(),
            kind,
        })
    }
}

fn netns_path(ns: &str) -> String {
    if ns.contains('/') {
        ns.to_string()
    } else {
        format!("/run/netns/{ns}")
    }
}

/// What one run of a probe measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The number compared with the threshold (`None`: nothing measured, e.g. unreachable).
    pub value: Option<f64>,
    pub ok: bool,
    /// HTTP: the median latency of the answered requests.
    pub latency_ms: Option<f64>,
    /// In words: `5/5 ok, p50 2.1 ms` or why it failed.
    pub detail: String,
}

/// One run of one probe, timed.
#[derive(Clone, Debug)]
pub struct Sample {
    pub probe: usize,
    pub start: Instant,
    pub end: Instant,
    pub out: Outcome,
}

enum Cmd {
    /// Run now (then every interval from now, when periodic).
    Kick,
    /// Run every interval from now on.
    Periodic,
    Stop,
}

/// The probes' threads; stopped and joined on drop.
pub struct Probers {
    cmds: Vec<mpsc::Sender<Cmd>>,
    threads: Vec<JoinHandle<()>>,
}

impl Probers {
    /// One thread per probe, idle until kicked or made periodic; samples go to `sink`.
    pub fn spawn(probes: &[Probe], sink: impl Fn(Sample) + Send + Clone + 'static) -> Probers {
        let mut cmds = Vec::new();
        let mut threads = Vec::new();
        for (i, p) in probes.iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let p = p.clone();
            let sink = sink.clone();
            threads.push(std::thread::spawn(move || prober(i, &p, &rx, &sink)));
            cmds.push(tx);
        }
        Probers { cmds, threads }
    }

    /// Every probe runs now.
    pub fn kick(&self) {
        for c in &self.cmds {
            let _ = c.send(Cmd::Kick);
        }
    }

    /// Every probe runs on its interval from now on.
    pub fn periodic(&self) {
        for c in &self.cmds {
            let _ = c.send(Cmd::Periodic);
        }
    }
}

impl Drop for Probers {
    fn drop(&mut self) {
        for c in &self.cmds {
            let _ = c.send(Cmd::Stop);
        }
        // A probe in the middle of a run ends within its own timeout; don't wait for it.
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn prober(i: usize, p: &Probe, rx: &mpsc::Receiver<Cmd>, sink: &impl Fn(Sample)) {
    // Sockets and child processes belong to the namespace of the thread that makes them.
    let entered = match &p.netns {
        Some(ns) => crate::net::netns::enter(ns).map_err(|e| format!("netns {ns}: {e:#}")),
        None => Ok(()),
    };
    let mut next: Option<Instant> = None;
    loop {
        let wait = match next {
            Some(n) => n.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Cmd::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Cmd::Periodic) => {
                next = Some(Instant::now());
                continue;
            }
            Ok(Cmd::Kick) => {
                if next.is_some() {
                    next = Some(Instant::now() + p.interval);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(n) = next.as_mut() {
                    *n += p.interval;
                    // Behind (a run took longer than the interval): start afresh, skip the missed.
                    let now = Instant::now();
                    if *n < now {
                        *n = now + p.interval;
                    }
                }
            }
        }
        let start = Instant::now();
        let out = match &entered {
            Ok(()) => p.run(),
            Err(e) => Outcome {
                value: None,
                ok: false,
                latency_ms: None,
                detail: e.clone(),
            },
        };
        sink(Sample {
            probe: i,
            start,
            end: Instant::now(),
            out,
        });
    }
}

/// Runs `p` (in its netns) again and again until it passes or `give_up`; then calls `done` with
/// when the passing run ended. Measures "traffic restored" after an abort without waiting for the
/// probe's own thread, which may be stuck in a run started before. An HTTP probe starts a new run
/// every 100 ms (at most 10 at a time) while earlier ones still wait: a connect whose SYN was
/// dropped before the faults were gone (a NetworkFault's removal reaches the nodes after its
/// delete is answered) waits for TCP's resend after 1 s, which is not when traffic came back. Other
/// probes run one at a time, 20 ms apart.
pub fn until_pass(
    p: &Probe,
    give_up: Instant,
    done: impl FnOnce(Option<Instant>) + Send + 'static,
) {
    let p = p.clone();
    let (most, every) = match p.kind {
        Kind::Http(_) => (10, Duration::from_millis(100)),
        _ => (1, Duration::from_millis(20)),
    };
    std::thread::spawn(move || {
        let (tx, rx) = mpsc::channel::<(bool, Instant)>();
        let mut running = 0;
        loop {
            if running < most && Instant::now() < give_up {
                running += 1;
                let (p, tx) = (p.clone(), tx.clone());
                std::thread::spawn(move || {
                    let ok = p
                        .netns
                        .as_deref()
                        .is_none_or(|ns| crate::net::netns::enter(ns).is_ok())
                        && p.run().ok;
                    let _ = tx.send((ok, Instant::now()));
                });
            }
            if running == 0 {
                return done(None);
            }
            match rx.recv_timeout(every) {
                Ok((true, t)) => return done(Some(t)),
                Ok((false, _)) => {
                    running -= 1;
                    if most == 1 {
                        std::thread::sleep(every);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return done(None),
            }
        }
    });
}

/// `f64` as people read it: `12`, `0.25`, `1.5e6`.
pub fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() >= 0.01 && v.abs() < 1e6 {
        format!("{v:.2}")
    } else {
        format!("{v:.3e}")
    }
}
