//! The API server as kubectl finds it (--kubeconfig, $KUBECONFIG, ~/.kube/config, --context, the
//! context's namespace; in a pod, its service account), and API errors turned into one clear line.

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::args::ConnArgs;
use crate::cli::Failure;

/// A client, and what error messages need to say where it went.
pub struct Conn {
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    pub context: String,
    pub server: String,
}

fn fail(msg: impl Into<String>) -> Failure {
    Failure(1, msg.into())
}

impl Conn {
    /// Reads the kubeconfig kubectl would read and builds a client for the chosen context.
    pub async fn new(a: &ConnArgs) -> Result<Conn, Failure> {
        let kc = match &a.kubeconfig {
            Some(p) => Some(
                Kubeconfig::read_from(p)
                    .map_err(|e| fail(format!("--kubeconfig: cannot read {}: {e}", p.display())))?,
            ),
            None => match Kubeconfig::read() {
                Ok(kc) => Some(kc),
                // No kubeconfig at all: in a pod, its service account (as kubectl does).
                Err(e) if a.context.is_none() && std::env::var_os("KUBECONFIG").is_none() => {
                    match Config::incluster() {
                        Ok(c) => return Self::with("in-cluster", c, a),
                        Err(_) => {
                            return Err(fail(format!(
                                "no kubeconfig ({e}): set KUBECONFIG or pass --kubeconfig FILE"
                            )));
                        }
                    }
                }
                Err(e) => return Err(fail(format!("reading the kubeconfig ($KUBECONFIG): {e}"))),
            },
        };
        let kc = kc.expect("read above");
        let context = match (&a.context, &kc.current_context) {
            (Some(c), _) => c.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => {
                return Err(fail(
                    "the kubeconfig has no current-context: pass --context NAME (kubectl config get-contexts lists them)",
                ));
            }
        };
        if !kc.contexts.iter().any(|c| c.name == context) {
            let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
            let which = if a.context.is_some() {
                "--context"
            } else {
                "current-context"
            };
            return Err(fail(format!(
                "{which}: no context '{context}' in the kubeconfig; it has: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let opts = KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let config = Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| fail(format!("context '{context}' of the kubeconfig: {e}")))?;
        Self::with(&context, config, a)
    }

    fn with(context: &str, config: Config, a: &ConnArgs) -> Result<Conn, Failure> {
        let server = config.cluster_url.to_string();
        let namespace = a
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = crate::kube_client::build(config).map_err(|e| {
            fail(format!(
                "a client for {server} (context {context}): {}",
                root_cause(&e)
            ))
        })?;
        Ok(Conn {
            client,
            namespace,
            context: context.to_string(),
            server: server.trim_end_matches('/').to_string(),
        })
    }

    /// One line for a failed call: the server's refusal, a missing CRD, or where it could not go.
    pub fn error(&self, e: kube::Error) -> Failure {
        match e {
            kube::Error::Api(s) => {
                let msg = if s.message.is_empty() {
                    s.reason.clone()
                } else {
                    s.message.clone()
                };
                match s.code {
                    401 => fail(format!(
                        "the API server {} (context {}) refused the credentials ({msg}); check the context's user",
                        self.server, self.context
                    )),
                    404 if s.details.as_ref().is_none_or(|d| d.name.is_empty()) => fail(format!(
                        "the API server {} (context {}) has no injector.dev resources: install the CRDs with `kubectl injector crd | kubectl apply -f -` ({msg})",
                        self.server, self.context
                    )),
                    _ => fail(msg),
                }
            }
            other => fail(format!(
                "cannot reach the API server {} (context {}): {}; is the cluster up, and is this the context you mean (--context, --kubeconfig)?",
                self.server,
                self.context,
                root_cause(&other)
            )),
        }
    }
}

/// The innermost cause: `Connection refused (os error 111)` rather than the wrappers around it.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
