//! The commands that talk to the API server: `fault add`, `ls`, `get`, `rm` and `abort` (apply is
//! in apply.rs); each maps the API's refusals to a message that names the object and the fix.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{
    MANAGER,
    args::{AbortArgs, AddArgs, ConnArgs, GetArgs, LsArgs, Output, RmArgs},
    conn::Conn,
    fault::{self, check_name},
    view::{self, FaultView},
};
use crate::{
    cli::{Failure, args::Output as CliOutput, output},
    k8s::{InjectorControl, InjectorNode, NetworkFault, control::CONTROL_NAME, status::rfc3339},
};

fn print_as<T: serde::Serialize>(v: &T, out: Output, table: impl FnOnce(&T) -> String) {
    let o = match out {
        Output::Json => CliOutput::Json,
        Output::Yaml => CliOutput::Yaml,
        Output::Table | Output::Wide => CliOutput::Table,
    };
    output::print(v, o, table);
}

pub async fn add(c: &ConnArgs, a: &AddArgs) -> Result<(), Failure> {
    if a.print {
        // Nothing is sent: the namespace is -n's, else the context's if a kubeconfig is there.
        let ns = match (&c.namespace, Conn::new(c).await) {
            (Some(ns), _) => ns.clone(),
            (None, Ok(conn)) => conn.namespace,
            (None, Err(_)) => "default".to_string(),
        };
        let nf = fault::build(a, &ns).map_err(|e| Failure(1, e))?;
        print_as(&nf, a.output.unwrap_or(Output::Yaml), |nf| {
            serde_saphyr::to_string(nf).unwrap_or_default()
        });
        return Ok(());
    }
    let conn = Conn::new(c).await?;
    let nf = fault::build(a, &conn.namespace).map_err(|e| Failure(1, e))?;
    let api: Api<NetworkFault> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let (name, ns) = (&a.name, &conn.namespace);
    let mut created = api.create(&pp, &nf).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 409 => Failure(
            1,
            format!(
                "NAME: a NetworkFault '{name}' exists in namespace {ns}; delete it first (kubectl injector rm {name} -n {ns}) or choose another name"
            ),
        ),
        kube::Error::Api(s)
            if s.code == 404 && s.details.as_ref().is_some_and(|d| d.kind == "namespaces") =>
        {
            Failure(
                1,
                format!(
                    "-n: namespace '{ns}' does not exist (context {}); create it or choose another",
                    conn.context
                ),
            )
        }
        other => conn.error(other),
    })?;
    created.metadata.managed_fields = None;
    match a.output {
        Some(o @ (Output::Json | Output::Yaml)) => print_as(&created, o, |_| String::new()),
        _ => println!(
            "networkfault.injector.dev/{name} created in namespace {ns}: {}, {}, for {}",
            view::action_text(&created),
            view::match_text(&created),
            created.spec.duration
        ),
    }
    Ok(())
}

/// Every InjectorNode report; none (and a note) when they cannot be read.
async fn node_reports(conn: &Conn) -> Vec<InjectorNode> {
    let api: Api<InjectorNode> = Api::all(conn.client.clone());
    match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            let Failure(_, msg) = conn.error(e);
            eprintln!("note: no counters per node (InjectorNode reports unreadable: {msg})");
            vec![]
        }
    }
}

pub async fn ls(c: &ConnArgs, a: &LsArgs) -> Result<(), Failure> {
    let conn = Conn::new(c).await?;
    let api: Api<NetworkFault> = if a.all_namespaces {
        Api::all(conn.client.clone())
    } else {
        Api::namespaced(conn.client.clone(), &conn.namespace)
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| conn.error(e))?;
    let nodes = node_reports(&conn).await;
    let now = SystemTime::now();
    let mut views: Vec<FaultView> = list
        .items
        .iter()
        .map(|nf| view::view(nf, &nodes, now))
        .collect();
    views.sort_by(|x, y| (&x.namespace, &x.name).cmp(&(&y.namespace, &y.name)));
    if views.is_empty() && matches!(a.output, Output::Table | Output::Wide) {
        let wher = if a.all_namespaces {
            "any namespace".to_string()
        } else {
            format!("namespace {}", conn.namespace)
        };
        eprintln!("No NetworkFaults in {wher}.");
        return Ok(());
    }
    print_as(&views, a.output, |v| {
        view::ls_table(v, a.all_namespaces, a.output == Output::Wide)
    });
    Ok(())
}

fn not_found(conn: &Conn, name: &str, e: kube::Error) -> Failure {
    match e {
        kube::Error::Api(s)
            if s.code == 404 && s.details.as_ref().is_some_and(|d| d.name == name) =>
        {
            Failure(
                1,
                format!(
                    "no NetworkFault '{name}' in namespace {} (kubectl injector ls -A lists every namespace)",
                    conn.namespace
                ),
            )
        }
        other => conn.error(other),
    }
}

pub async fn get(c: &ConnArgs, a: &GetArgs) -> Result<(), Failure> {
    check_name("NAME", &a.name).map_err(|e| Failure(1, e))?;
    let conn = Conn::new(c).await?;
    let api: Api<NetworkFault> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let nf = api
        .get(&a.name)
        .await
        .map_err(|e| not_found(&conn, &a.name, e))?;
    let nodes = node_reports(&conn).await;
    let v = view::view(&nf, &nodes, SystemTime::now());
    print_as(&v, a.output, view::get_text);
    Ok(())
}

pub async fn rm(c: &ConnArgs, a: &RmArgs) -> Result<(), Failure> {
    if a.names.is_empty() && !a.all {
        return Err(Failure(
            2,
            "rm: name the NetworkFaults to delete, or --all".into(),
        ));
    }
    for n in &a.names {
        check_name("NAME", n).map_err(|e| Failure(1, e))?;
    }
    let conn = Conn::new(c).await?;
    let api: Api<NetworkFault> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let names: Vec<String> = if a.all {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| conn.error(e))?;
        list.items
            .into_iter()
            .filter_map(|nf| nf.metadata.name)
            .collect()
    } else {
        // All or nothing: every name must exist before any is deleted.
        for n in &a.names {
            api.get(n).await.map_err(|e| not_found(&conn, n, e))?;
        }
        a.names.clone()
    };
    if names.is_empty() {
        println!("no NetworkFaults in namespace {}", conn.namespace);
    }
    for n in &names {
        api.delete(n, &DeleteParams::default())
            .await
            .map_err(|e| not_found(&conn, n, e))?;
        println!("networkfault.injector.dev/{n} deleted");
    }
    Ok(())
}

pub async fn abort(c: &ConnArgs, a: &AbortArgs) -> Result<(), Failure> {
    let conn = Conn::new(c).await?;
    // Whole seconds, never rounded up: a fault created after this call is never counted in
    // (creationTimestamps are whole seconds too).
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let at = rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
    let mut abort = json!({"at": at});
    if !a.reason.is_empty() {
        abort["reason"] = json!(a.reason);
    }
    let body = json!({
        "apiVersion": "injector.dev/v1alpha1",
        "kind": "InjectorControl",
        "metadata": {"name": CONTROL_NAME},
        "spec": {"abort": abort},
    });
    let api: Api<InjectorControl> = Api::all(conn.client.clone());
    // Forced: the abort must land even when another manager wrote the last one.
    api.patch(
        CONTROL_NAME,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| conn.error(e))?;
    let why = if a.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", a.reason)
    };
    println!("injectorcontrol.injector.dev/{CONTROL_NAME}: abort at {at}{why}");
    // What it ends, as far as this user may list (best effort).
    let all: Api<NetworkFault> = Api::all(conn.client.clone());
    let now = match all.list(&ListParams::default()).await {
        Ok(l) => format!(" ({} exist now)", l.items.len()),
        Err(_) => String::new(),
    };
    println!(
        "every NetworkFault created at or before {at}{now} is ended on every node by its daemon; later ones run as usual"
    );
    Ok(())
}
