//! Experiments: a hypothesis about the steady state, probes that measure it, steps of faults that
//! ramp up, abort rules, recovery, and a report (JSON + HTML). The faults go to node daemons, or
//! (`targets: kubernetes`) to the cluster as NetworkFaults.

pub mod backend;
pub mod cluster;
pub mod daemons;
mod events;
pub mod file;
pub mod kfault;
pub mod probe;
pub mod ramp;
pub mod report;
pub mod rules;
pub mod runner;
pub mod view;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{cli::Failure, client::Endpoint, kubectl::args::ConnArgs};

/// Where `experiment run` sends the faults, as the command line says.
pub struct Where {
    /// The daemons (`--daemon`, else the global socket or `--addr`); an error when they cannot
    /// be reached as given (it matters only for node-level files).
    pub daemons: Result<Vec<Endpoint>, Failure>,
    /// `--daemon` was given.
    pub daemons_given: bool,
    /// The cluster, for `targets: kubernetes` (--kubeconfig, --context, -n).
    pub cluster: ConnArgs,
}

/// `experiment run`: load and check the file (nothing starts when it is bad), run it, write the
/// report (`report`.json and .html). Exit 0 when the hypothesis held (or the dry run passed).
pub fn run(
    label: &str,
    text: &str,
    at: Where,
    dry_run: bool,
    report: &Path,
) -> Result<(), Failure> {
    let exp = file::load(label, text).map_err(|e| Failure(1, format!("{label}: {e}")))?;
    let c = &at.cluster;
    let cluster_flags = c.kubeconfig.is_some() || c.context.is_some() || c.namespace.is_some();
    let (backend, run): (Arc<dyn backend::Backend>, Option<String>) = match exp.targets {
        file::Targets::Kubernetes => {
            if at.daemons_given {
                return Err(Failure(
                    2,
                    "--daemon: this experiment's faults are NetworkFaults (targets: kubernetes): they go through the cluster (--kubeconfig, --context, -n), not to daemons".into(),
                ));
            }
            let id = cluster::run_id();
            let k = cluster::Cluster::connect(c, &exp.name, id.clone())?;
            let rm: Vec<String> = k
                .namespaces(&exp.steps)
                .iter()
                .map(|ns| {
                    format!(
                        "kubectl delete networkfaults -n {ns} -l {}={id}",
                        cluster::RUN_LABEL
                    )
                })
                .collect();
            println!(
                "run {id}: NetworkFaults <fault>-{id}, label {}={id} (what a killed run leaves: {})",
                cluster::RUN_LABEL,
                rm.join("; ")
            );
            (Arc::new(k), Some(id))
        }
        file::Targets::Nodes => {
            if cluster_flags {
                return Err(Failure(
                    2,
                    "--kubeconfig/--context/-n: this experiment's faults are node-level (no targets: kubernetes in the file): they go to daemons (--daemon)".into(),
                ));
            }
            (Arc::new(daemons::Daemons { eps: at.daemons? }), None)
        }
    };
    let rep = runner::run(&exp, backend, dry_run, run);
    let (json, html) = paths(report);
    report::json::write(&json, &rep).map_err(|e| Failure(1, e))?;
    std::fs::write(&html, report::html::render(&rep))
        .map_err(|e| Failure(1, format!("writing {}: {e}", html.display())))?;
    let v = &rep.verdict;
    let word = serde_json::to_value(v.result)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let at = v.step.map(|k| format!(" at step {k}")).unwrap_or_default();
    println!("verdict: {word}{at}: {}", v.reason);
    if let Some(a) = &rep.abort {
        println!(
            "abort: breach at {:.2}s, faults removed {:.1} ms later, traffic restored {}",
            a.breach_s,
            a.removal_ms,
            a.restore_ms
                .map(|m| format!("{m:.0} ms after the breach"))
                .unwrap_or_else(|| "not seen".into())
        );
    }
    println!("report: {} {}", json.display(), html.display());
    match v.result {
        report::Conclusion::Held | report::Conclusion::DryRun => Ok(()),
        report::Conclusion::NotStarted if rep.daemons.is_empty() => {
            Err(Failure(3, v.reason.clone()))
        }
        _ => Err(Failure(1, format!("the experiment ended {word}{at}"))),
    }
}

/// `experiment report FILE.json [-o FILE.html]`: the HTML again from the JSON.
pub fn rerender(json: &Path, out: Option<&Path>) -> Result<(), Failure> {
    let rep = report::json::read(json).map_err(|e| Failure(1, e))?;
    let html = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| json.with_extension("html"));
    std::fs::write(&html, report::html::render(&rep))
        .map_err(|e| Failure(1, format!("writing {}: {e}", html.display())))?;
    println!("{}", html.display());
    Ok(())
}

/// `x.json` / `x` -> (`x.json`, `x.html`).
fn paths(report: &Path) -> (PathBuf, PathBuf) {
    let base = if report
        .extension()
        .is_some_and(|e| e == "json" || e == "html")
    {
        report.with_extension("")
    } else {
        report.to_path_buf()
    };
    (base.with_extension("json"), base.with_extension("html"))
}
