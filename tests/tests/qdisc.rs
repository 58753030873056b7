//! The rtnetlink qdisc code against the running kernel, in a throwaway network namespace: reading
//! the root qdisc, deleting it back to the default, and installing fq where the kernel has it (on
//! a kernel without sch_fq the kernel's refusal comes back as an error, and nothing changes).

use std::time::Duration;

use injector::kernel::qdisc;
use injector_tests::{cmd, lab::run_prefix, require_root, traffic::in_netns};

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = cmd::ip("", &["netns", "del", &self.0]);
    }
}

#[test]
fn root_qdiscs_are_read_replaced_and_restored() {
    require_root();
    let ns = Netns(format!("{}-q", run_prefix("qd")));
    cmd::ip("", &["netns", "add", &ns.0]).unwrap();
    cmd::ip(
        &ns.0,
        &[
            "link", "add", "vethq0", "type", "veth", "peer", "name", "vethq1",
        ],
    )
    .unwrap();
    cmd::ip(&ns.0, &["link", "set", "vethq0", "up"]).unwrap();
    let kind = |n: &str| {
        let n = n.to_string();
        in_netns(&ns.0, move || Ok(qdisc::root_kind(&n)?)).unwrap()
    };
    assert_eq!(kind("vethq0"), "noqueue");
    // A qdisc someone else installed is read as it is.
    cmd::run(
        "tc",
        &[
            "-n", &ns.0, "qdisc", "add", "dev", "vethq0", "root", "tbf", "rate", "1mbit", "burst",
            "32kbit", "latency", "400ms",
        ],
    )
    .unwrap();
    assert_eq!(kind("vethq0"), "tbf");
    in_netns(&ns.0, || Ok(qdisc::delete_root("vethq0")?)).unwrap();
    assert_eq!(
        kind("vethq0"),
        "noqueue",
        "deleting the root restores the default"
    );

    let p = qdisc::fq_params(100_000, Duration::from_millis(50));
    let r = in_netns(&ns.0, move || Ok(qdisc::install_fq("vethq0", p))).unwrap();
    if injector::kernel::features::fq() {
        r.unwrap();
        assert_eq!(kind("vethq0"), "fq");
        let shown = cmd::run("tc", &["-n", &ns.0, "qdisc", "show", "dev", "vethq0"]).unwrap();
        assert!(
            shown.contains("limit 10000p") && shown.contains("horizon 10s"),
            "{shown}"
        );
        in_netns(&ns.0, || Ok(qdisc::delete_root("vethq0")?)).unwrap();
    } else {
        let e = r.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "no sch_fq: {e}");
    }
    assert_eq!(kind("vethq0"), "noqueue");
}
