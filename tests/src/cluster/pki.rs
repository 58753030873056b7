//! Who may call the API server of a run: static-token identities, the CA and serving certificate
//! (valid for 127.0.0.1, which is also the address the API server has inside every lab node, see
//! [`super::apiserver`]), the service-account key, and a kubeconfig per identity.

use std::{fmt::Write as _, io::Read as _, path::Path, process::Command};

use anyhow::{Context as _, Result, ensure};

use super::{ADMIN, DAEMON, DAEMON_USER};

/// One static token identity of the API server (`--token-auth-file`).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Short name: its kubeconfig is `kubeconfig-<name>`.
    pub name: String,
    /// The user name RBAC sees.
    pub user: String,
    pub groups: Vec<String>,
    /// A random bearer token, new per run.
    pub token: String,
}

impl Identity {
    pub fn new(name: &str, user: &str, groups: &[&str]) -> Identity {
        Identity {
            name: name.to_string(),
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            token: random_hex(16),
        }
    }
}

/// [`ADMIN`] (system:masters) and [`DAEMON`] (the daemon's service account user, no rights until
/// a binding grants them).
pub fn default_identities() -> Vec<Identity> {
    vec![
        Identity::new(ADMIN, "admin", &["system:masters"]),
        Identity::new(
            DAEMON,
            DAEMON_USER,
            &["system:serviceaccounts", "system:serviceaccounts:injector"],
        ),
    ]
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run openssl (apt-get install openssl; bash scripts/bootstrap.sh does)")?;
    ensure!(
        out.status.success(),
        "`openssl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// CA, serving cert for 127.0.0.1/localhost/kubernetes.default.svc, service-account key.
pub(super) fn make_pki(pki: &Path) -> Result<()> {
    std::fs::create_dir_all(pki)?;
    let days = "3650";
    openssl(
        pki,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            days,
            "-subj",
            "/CN=injector-test-ca",
        ],
    )?;
    openssl(
        pki,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ],
    )?;
    std::fs::write(
        pki.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n\
         basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        pki,
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "apiserver.crt",
            "-days",
            days,
            "-extfile",
            "ext.cnf",
        ],
    )?;
    openssl(pki, &["genrsa", "-out", "sa.key", "2048"])
}

pub(super) fn tokens_csv(ids: &[Identity]) -> String {
    ids.iter().fold(String::new(), |mut s, id| {
        let _ = writeln!(
            s,
            "{},{},{},\"{}\"",
            id.token,
            id.user,
            id.name,
            id.groups.join(",")
        );
        s
    })
}

pub(super) fn kubeconfig_yaml(url: &str, ca: &Path, id: &Identity) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: injector\n  cluster:\n    server: {url}\n    certificate-authority: {}\n\
         users:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: injector\n    user: {name}\n\
         current-context: {name}\n",
        ca.display(),
        name = id.name,
        token = id.token,
    )
}
