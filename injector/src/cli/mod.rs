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
use serde_json::Value;

use self::args::{Cli, Cmd, FaultCmd, LocalCmd, Output};
use crate::{
    client::{ClientError, Endpoint},
    local, parse,
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

fn endpoint(cli: &Cli) -> Result<Endpoint, Failure> {
    match &cli.addr {
        None => Ok(Endpoint::Unix(cli.socket.clone())),
        Some(addr) => {
            let f = cli.token_file.as_ref().ok_or_else(|| {
                Failure(
                    2,
                    "--addr: a TCP daemon needs --token-file FILE with its bearer token".into(),
                )
            })?;
            let token = std::fs::read_to_string(f).map_err(|e| {
                Failure(1, format!("--token-file: cannot read {}: {e}", f.display()))
            })?;
            Ok(Endpoint::Tcp {
                addr: addr.clone(),
                token: token.trim().to_string(),
            })
        }
    }
}

/// One API call; the JSON body on success, the daemon's message (through `fix`) otherwise.
fn call(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&str>,
    fix: fn(&str) -> String,
) -> Result<Value, Failure> {
    let r = ep.request(method, path, body)?;
    if (200..300).contains(&r.status) {
        serde_json::from_str(&r.body).map_err(|e| {
            Failure(
                1,
                format!("the daemon answered with something that is not JSON: {e}"),
            )
        })
    } else {
        Err(Failure(1, fix(&r.error_message())))
    }
}

pub(crate) fn get_json(ep: &Endpoint, path: &str) -> Result<Value, Failure> {
    call(ep, "GET", path, None, str::to_string)
}

fn read_input(path: &str) -> Result<String, Failure> {
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

/// YAML or JSON (JSON is YAML) -> the JSON the API takes.
fn to_json(path: &str, text: &str) -> Result<String, Failure> {
    let v: Value = if text.trim_start().starts_with(['{', '[']) {
        serde_json::from_str(text).map_err(|e| Failure(1, format!("-f {path}: not JSON: {e}")))?
    } else {
        serde_yaml::from_str(text).map_err(|e| Failure(1, format!("-f {path}: not YAML: {e}")))?
    };
    let json = serde_json::to_string(&v).map_err(|e| Failure(1, e.to_string()))?;
    // Checked here too, so a typo fails before the daemon is asked.
    crate::fault::spec::parse_list(&json).map_err(|e| Failure(1, format!("-f {path}: {e}")))?;
    Ok(json)
}

fn done(v: &Value, out: Output, what: &str) {
    output::print(v, out, |v| {
        let names: Vec<String> = v
            .get(what)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut text = if names.is_empty() {
            format!("{what}: {v}\n")
        } else {
            format!("{what}: {}\n", names.join(", "))
        };
        // Protected targets carved out of the faults just added.
        for (name, list) in v["carved"].as_object().into_iter().flatten() {
            let items: Vec<String> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{} {} ({})",
                        c["field"].as_str().unwrap_or("?"),
                        c["cidr"].as_str().unwrap_or("?"),
                        c["why"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            text += &format!("  {name}: protected, left out: {}\n", items.join(", "));
        }
        text
    });
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
        Cmd::Local { bpffs, cmd } => match cmd {
            LocalCmd::Stats => Ok(local::stats(bpffs)?),
            LocalCmd::Abort => Ok(local::abort(bpffs)?),
        },
        Cmd::Apply {
            file,
            force,
            replace,
            out,
        } => {
            let json = to_json(file, &read_input(file)?)?;
            let v = call(
                &endpoint(&cli)?,
                "POST",
                &format!("/v1/faults?force={force}&replace={replace}"),
                Some(&json),
                str::to_string,
            )?;
            done(&v, out.output, "created");
            Ok(())
        }
        Cmd::Fault { cmd } => {
            let ep = endpoint(&cli)?;
            match cmd {
                FaultCmd::Add(a) => {
                    let spec = flags::spec(a);
                    spec.validate("")
                        .map_err(|e| Failure(1, flags::as_flags(&e.to_string())))?;
                    let body =
                        serde_json::to_string(&[&spec]).map_err(|e| Failure(1, e.to_string()))?;
                    let v = call(
                        &ep,
                        "POST",
                        &format!("/v1/faults?force={}&replace={}", a.force, a.replace),
                        Some(&body),
                        flags::as_flags,
                    )?;
                    done(&v, a.out.output, "created");
                    Ok(())
                }
                FaultCmd::Ls { out } => {
                    output::print(
                        &get_json(&ep, "/v1/faults")?,
                        out.output,
                        output::faults_table,
                    );
                    Ok(())
                }
                FaultCmd::Get { name, out } => {
                    output::print(
                        &get_json(&ep, &format!("/v1/faults/{name}"))?,
                        out.output,
                        output::faults_table,
                    );
                    Ok(())
                }
                FaultCmd::Rm { names, all } => {
                    if *all {
                        let v = call(&ep, "DELETE", "/v1/faults", None, str::to_string)?;
                        println!("deleted {} faults", v["deleted_count"]);
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
                        get_json(&ep, &format!("/v1/faults/{n}"))?;
                    }
                    for n in names {
                        call(
                            &ep,
                            "DELETE",
                            &format!("/v1/faults/{n}"),
                            None,
                            str::to_string,
                        )?;
                        println!("deleted {n}");
                    }
                    Ok(())
                }
            }
        }
        Cmd::Abort { out } => {
            let v = call(&endpoint(&cli)?, "POST", "/v1/abort", None, str::to_string)?;
            output::print(&v, out.output, |_| {
                "aborted: every fault is disarmed (`injector arm` re-arms)\n".into()
            });
            Ok(())
        }
        Cmd::Arm { out } => {
            let v = call(&endpoint(&cli)?, "POST", "/v1/arm", None, str::to_string)?;
            output::print(&v, out.output, |_| "armed\n".into());
            Ok(())
        }
        Cmd::Status { out } => {
            output::print(
                &get_json(&endpoint(&cli)?, "/v1/status")?,
                out.output,
                output::status_table,
            );
            Ok(())
        }
        Cmd::Top { interval, count } => {
            let every = parse::duration(
                "--interval",
                interval,
                (Duration::from_millis(100), "100ms"),
                (Duration::from_secs(3600), "1h"),
            )
            .map_err(|e| Failure(1, e.to_string()))?;
            top::run(&endpoint(&cli)?, every, *count)
        }
    }
}
