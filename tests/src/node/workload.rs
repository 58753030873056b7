//! The application side of a node: three pods of [`images::BUSYBOX`] in namespace [`NS`]
//! (`web` serving [`images::PAGE`] on 8080, `client` and `bystander` idle, each labelled
//! `app=<name>`; with two nodes `web` runs on the second, so their traffic crosses flannel.1),
//! HTTP between them through kubelet's exec, the DaemonSet's pod on a node and its metrics
//! (hostNetwork: the node's port 9464). Used by node_lab and `cargo xtask demo --node`.

use std::time::Duration;

use anyhow::{Result, ensure};

use super::{Member, Node, images};

/// The application pods' namespace.
pub const NS: &str = "shop";

/// The namespace and the three pods, as YAML for `kubectl apply -f -`: `web` on node `web_on`,
/// the others on node `others_on` (by the `kubernetes.io/hostname` label kubelet sets).
pub fn pods_yaml(web_on: &str, others_on: &str) -> String {
    let pod = |name: &str, node: &str, cmd: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}\n\
             spec:\n  terminationGracePeriodSeconds: 1\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  \
             containers:\n  - name: main\n    image: {img}\n    imagePullPolicy: Never\n    command: {cmd}\n",
            img = images::BUSYBOX
        )
    };
    [
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"),
        pod(
            "web",
            web_on,
            r#"["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#,
        ),
        pod("client", others_on, r#"["/bin/sleep", "3600"]"#),
        pod("bystander", others_on, r#"["/bin/sleep", "3600"]"#),
    ]
    .join("---\n")
}

/// `wget` of the web pod's page from pod `from`, through kubelet's exec: whether it came.
pub fn fetch(n: &Node, from: &str, web_ip: &str) -> Result<bool> {
    let url = format!("http://{web_ip}:8080/");
    // busybox's `wget -T` crashes (a busybox bug): `timeout` bounds it instead.
    let out = n.kubectl(
        &[
            "exec", "-n", NS, from, "--", "timeout", "3", "wget", "-q", "-O", "-", &url,
        ],
        None,
    )?;
    Ok(out.ok && out.stdout == images::PAGE)
}

/// The DaemonSet's pod on node `on`: (name, uid).
pub fn daemon_pod(n: &Node, on: &Member) -> Result<(String, String)> {
    let field = format!("spec.nodeName={}", on.name);
    let out = n.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            "injector",
            "-l",
            "app.kubernetes.io/name=injector",
            "--field-selector",
            &field,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.phase}{\"\\n\"}{end}",
        ],
        None,
    )?;
    let running: Vec<&str> = out.lines().filter(|l| l.ends_with(" Running")).collect();
    ensure!(running.len() == 1, "daemon pods on {}: {out:?}", on.name);
    let f: Vec<&str> = running[0].split(' ').collect();
    Ok((f[0].to_string(), f[1].to_string()))
}

/// The metrics of the daemon on node `on` (hostNetwork: the node's port 9464, from the host).
pub fn metrics(on: &Member) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let addr = std::net::SocketAddr::from((on.address(), 9464));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    ensure!(
        raw.starts_with("HTTP/1.0 200") || raw.starts_with("HTTP/1.1 200"),
        "GET /metrics: {raw:.200}"
    );
    Ok(raw)
}

/// The sum of every sample of metric `name` (any labels).
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Applies [`pods_yaml`] (`web` on the last node, the others on the first) and waits until
/// every pod is Ready; the web pod's address.
pub fn start_pods(n: &Node) -> Result<String> {
    let (first, last) = (&n.nodes[0], &n.nodes[n.nodes.len() - 1]);
    n.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&pods_yaml(&last.name, &first.name)),
    )?;
    n.kubectl_ok(
        &[
            "wait",
            "-n",
            NS,
            "--for=condition=Ready",
            "pod",
            "--all",
            "--timeout=120s",
        ],
        None,
    )?;
    let web_ip = n
        .kubectl_ok(
            &[
                "get",
                "pod",
                "-n",
                NS,
                "web",
                "-o",
                "jsonpath={.status.podIP}",
            ],
            None,
        )?
        .trim()
        .to_string();
    ensure!(
        web_ip.starts_with("10.88."),
        "web's podIP {web_ip:?} not from the bridge's range"
    );
    Ok(web_ip)
}
