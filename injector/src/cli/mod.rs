//! The CLI: subcommands that talk to the daemon's API (or, for `local`, to the pinned maps).
//!
//! Exit codes: 0 done; 1 the daemon refused the request (bad input, conflict, not found) or a
//! local failure; 2 bad command-line usage; 3 the daemon cannot be reached.

pub mod args;
mod flags;
pub mod output;
mod top;

use std::time::Duration;

use clap::CommandFactory as _;
use serde::de::DeserializeOwned;

use self::args::{Cli, ClientArgs, Cmd, ExperimentCmd, FaultCmd, LocalCmd, Output};
use crate::{
    api::{Armed, Cleared, Created, Deleted, FaultView, FaultViews, Status},
    client::{ClientError, Endpoint},
    experiment, local, parse,
};

/// A failure, with the exit code it maps to.
pub struct Failure(pub u8, pub String);

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure(1, format!("{e:#}"))
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = if matches!(e, ClientError::Unreachable { .. }) {
            3
        } else {
            1
        };
        Failure(code, e.to_string())
    }
}

fn endpoint(cli: &Cli, conn: &ClientArgs) -> Result<Endpoint, Failure> {
    tcp_or(
        conn,
        conn.addr.as_deref(),
        Endpoint::Unix(cli.socket.clone()),
    )
}

/// `experiment run --daemon D`: a socket path, or HOST:PORT (with --token-file).
fn daemon_endpoint(conn: &ClientArgs, d: &str) -> Result<Endpoint, Failure> {
    let tcp = !d.contains('/')
        && d.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    tcp_or(conn, tcp.then_some(d), Endpoint::Unix(d.into()))
}

/// TCP to `addr` with --token-file's token, or `unix`.
fn tcp_or(conn: &ClientArgs, addr: Option<&str>, unix: Endpoint) -> Result<Endpoint, Failure> {
    match addr {
        None => Ok(unix),
        Some(addr) => {
            let f = conn.token_file.as_ref().ok_or_else(|| {
                Failure(
                    2,
                    "--addr: a TCP daemon needs --token-file FILE with its bearer token".into(),
                )
            })?;
            let token = crate::secret::read_token("--token-file", f).map_err(|e| Failure(1, e))?;
            Ok(Endpoint::Tcp {
                addr: addr.to_string(),
                token,
            })
        }
    }
}

/// One API call; the typed body on success, the daemon's message (through `fix`) otherwise.
fn call<T: DeserializeOwned>(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&str>,
    fix: fn(&str) -> String,
) -> Result<T, Failure> {
    let r = ep.request(method, path, body)?;
    if (200..300).contains(&r.status) {
        serde_json::from_str(&r.body).map_err(|e| {
            Failure(
                1,
                format!("{method} {path}: the daemon's answer is not what this CLI reads ({e}); is it another version?"),
            )
        })
    } else {
        Err(Failure(1, fix(&r.error_message())))
    }
}

pub(crate) fn get<T: DeserializeOwned>(ep: &Endpoint, path: &str) -> Result<T, Failure> {
    call(ep, "GET", path, None, str::to_string)
}

/// A file's text, or stdin's for `-` (`-f` of `apply` here and of `kubectl injector apply`).
pub(crate) fn read_input(path: &str) -> Result<String, Failure> {
    use std::io::Read as _;
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure(1, format!("-f -: reading stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Failure(1, format!("-f: cannot read {path}: {e}")))
    }
}

/// The first line of a YAML error, without its `error: ` (the rest is a snippet of the input).
fn yaml_error(e: &serde_saphyr::Error) -> String {
    let e = e.to_string();
    let first = e.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// YAML or JSON (JSON is YAML) -> the JSON the API takes.
fn to_json(path: &str, text: &str) -> Result<String, Failure> {
    let v: serde_json::Value = if text.trim_start().starts_with(['{', '[']) {
        serde_json::from_str(text).map_err(|e| Failure(1, format!("-f {path}: not JSON: {e}")))?
    } else {
        serde_saphyr::from_str(text)
            .map_err(|e| Failure(1, format!("-f {path}: not YAML: {}", yaml_error(&e))))?
    };
    let json = serde_json::to_string(&v).map_err(|e| Failure(1, e.to_string()))?;
    // Checked here too, so a typo fails before the daemon is asked.
    crate::fault::spec::parse_list(&json).map_err(|e| Failure(1, format!("-f {path}: {e}")))?;
    Ok(json)
}

/// `created: a, b`, and the protected targets carved out of each.
fn created(c: &Created) -> String {
    let mut s = format!("created: {}\n", c.created.join(", "));
    for (name, carved) in &c.carved {
        let list: Vec<String> = carved
            .iter()
            .map(|k| format!("{} ({}) from {}", k.cidr, k.why, k.field))
            .collect();
        s += &format!("  {name}: carved out {}\n", list.join(", "));
    }
    if let Some(m) = &c.rate_mode {
        s += &format!("  rate: {m}\n");
    }
    s
}

fn print_faults(v: &FaultViews, out: Output) {
    match v {
        FaultViews::Many(list) => output::print(list, out, |l| output::faults_table(l)),
        FaultViews::One(one) => output::print(one.as_ref(), out, |f: &FaultView| {
            output::faults_table(std::slice::from_ref(f))
        }),
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.cmd {
        Cmd::Daemon(_) => unreachable!("handled in main"),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "injector",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cmd::Crd => {
            print!("{}", crate::k8s::crd_yaml());
            Ok(())
        }
        Cmd::Experiment { cmd, conn } => match cmd {
            ExperimentCmd::Run {
                file,
                dry_run,
                daemons,
                report,
                cluster,
            } => {
                let eps = if daemons.is_empty() {
                    endpoint(&cli, conn).map(|e| vec![e])
                } else {
                    daemons.iter().map(|d| daemon_endpoint(conn, d)).collect()
                };
                let at = experiment::Where {
                    daemons: eps,
                    daemons_given: !daemons.is_empty(),
                    cluster: cluster.clone(),
                };
                experiment::run(file, &read_input(file)?, at, *dry_run, report)
            }
            ExperimentCmd::Report { file, out } => experiment::rerender(file, out.as_deref()),
        },
        Cmd::Local { bpffs, cmd } => match cmd {
            LocalCmd::Stats => Ok(local::stats(bpffs)?),
            LocalCmd::Abort => Ok(local::abort(bpffs)?),
        },
        Cmd::Apply {
            file,
            force,
            replace,
            out,
            conn,
        } => {
            let json = to_json(file, &read_input(file)?)?;
            let v: Created = call(
                &endpoint(&cli, conn)?,
                "POST",
                &format!("/v1/faults?force={force}&replace={replace}"),
                Some(&json),
                str::to_string,
            )?;
            output::print(&v, out.output, created);
            Ok(())
        }
        Cmd::Fault { cmd, conn } => {
            let ep = endpoint(&cli, conn)?;
            match cmd {
                FaultCmd::Add(a) => {
                    let spec = a.spec.clone();
                    spec.validate("")
                        .map_err(|e| Failure(1, flags::as_flags(&e.to_string())))?;
                    let body =
                        serde_json::to_string(&[&spec]).map_err(|e| Failure(1, e.to_string()))?;
                    let v: Created = call(
                        &ep,
                        "POST",
                        &format!("/v1/faults?force={}&replace={}", a.force, a.replace),
                        Some(&body),
                        flags::as_flags,
                    )?;
                    output::print(&v, a.out.output, created);
                    Ok(())
                }
                FaultCmd::Ls { out } => {
                    print_faults(&FaultViews::Many(get(&ep, "/v1/faults")?), out.output);
                    Ok(())
                }
                FaultCmd::Get { name, out } => {
                    let one = get(&ep, &format!("/v1/faults/{name}"))?;
                    print_faults(&FaultViews::One(Box::new(one)), out.output);
                    Ok(())
                }
                FaultCmd::Rm { names, all } => {
                    if *all {
                        let v: Cleared = call(&ep, "DELETE", "/v1/faults", None, str::to_string)?;
                        println!("deleted {} faults", v.deleted_count);
                        return Ok(());
                    }
                    if names.is_empty() {
                        return Err(Failure(
                            2,
                            "fault rm: name the faults to delete, or --all".into(),
                        ));
                    }
                    // All or nothing: every name must exist before any is deleted.
                    for n in names {
                        get::<FaultView>(&ep, &format!("/v1/faults/{n}"))?;
                    }
                    for n in names {
                        let d: Deleted = call(
                            &ep,
                            "DELETE",
                            &format!("/v1/faults/{n}"),
                            None,
                            str::to_string,
                        )?;
                        println!("deleted {}", d.deleted.join(", "));
                    }
                    Ok(())
                }
            }
        }
        Cmd::Abort { out, conn } => {
            let v: Armed = call(
                &endpoint(&cli, conn)?,
                "POST",
                "/v1/abort",
                None,
                str::to_string,
            )?;
            output::print(&v, out.output, |_| {
                "aborted: every fault is disarmed (`injector arm` re-arms)\n".into()
            });
            Ok(())
        }
        Cmd::Arm { out, conn } => {
            let v: Armed = call(
                &endpoint(&cli, conn)?,
                "POST",
                "/v1/arm",
                None,
                str::to_string,
            )?;
            output::print(&v, out.output, |_| "armed\n".into());
            Ok(())
        }
        Cmd::Status { out, conn } => {
            let st: Status = get(&endpoint(&cli, conn)?, "/v1/status")?;
            output::print(&st, out.output, output::status_table);
            Ok(())
        }
        Cmd::Top {
            interval,
            count,
            conn,
        } => {
            let every = parse::duration(
                "--interval",
                interval,
                (Duration::from_millis(100), "100ms"),
                (Duration::from_secs(3600), "1h"),
            )
            .map_err(|e| Failure(1, e.to_string()))?;
            top::run(&endpoint(&cli, conn)?, every, *count)
        }
    }
}
