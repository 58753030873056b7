//! Any object by its JSON, as the admin: server-side apply, create (to see the API server refuse
//! one), get and delete, the kind resolved by discovery (so custom resources need no Rust type
//! here: the tests' library does not depend on the `injector` crate).

use anyhow::{Context as _, Result};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery::{self, Scope},
};
use serde_json::Value;

use super::{Cluster, MANAGER};

/// `apiVersion` (`group/version` or `version`) and `kind` as a GroupVersionKind.
fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

impl Cluster {
    /// The API of `kind` in `api_version`, in `namespace` when the kind is namespaced.
    fn dynamic(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
    ) -> Result<Api<DynamicObject>> {
        let client = self.client.clone();
        let (ar, caps) = self
            .block_on(discovery::pinned_kind(&client, &gvk(api_version, kind)))
            .with_context(|| format!("discovering {kind} in {api_version}"))?;
        Ok(match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client, namespace, &ar),
            Scope::Cluster => Api::all_with(client, &ar),
        })
    }

    fn api_of(&self, obj: &Value) -> Result<(Api<DynamicObject>, String)> {
        let field = |f: &str| {
            obj.pointer(f)
                .and_then(Value::as_str)
                .with_context(|| format!("the object has no {f}: {obj}"))
        };
        let (v, k, name) = (
            field("/apiVersion")?,
            field("/kind")?,
            field("/metadata/name")?,
        );
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        Ok((self.dynamic(v, k, ns)?, name.to_string()))
    }

    /// Server-side apply of `obj` (apiVersion, kind, metadata.name, metadata.namespace if
    /// namespaced), forcing conflicts: the test owns every field it sets.
    pub fn apply(&self, obj: &Value) -> Result<()> {
        let (api, name) = self.api_of(obj)?;
        self.block_on(api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        ))
        .with_context(|| format!("applying {name}"))?;
        Ok(())
    }

    /// Creates `obj`; the API server's refusal (e.g. of its schema, naming the field) is the
    /// error's message.
    pub fn create(&self, obj: &Value) -> Result<()> {
        let (api, name) = self.api_of(obj)?;
        let obj: DynamicObject = serde_json::from_value(obj.clone())?;
        match self.block_on(api.create(&PostParams::default(), &obj)) {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) => Err(anyhow::anyhow!(
                "creating {name}: {} ({}, {})",
                s.message,
                s.code,
                s.reason
            )),
            Err(e) => Err(e).with_context(|| format!("creating {name}")),
        }
    }

    /// The object `namespace/name` of `kind` as JSON (namespace ignored for a cluster-scoped
    /// kind), None when there is none.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>> {
        let api = self.dynamic(api_version, kind, namespace)?;
        let obj = self
            .block_on(api.get_opt(name))
            .with_context(|| format!("getting {kind} {namespace}/{name}"))?;
        obj.map(serde_json::to_value)
            .transpose()
            .map_err(Into::into)
    }

    /// Deletes `namespace/name` of `kind` (no error when it is gone already).
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<()> {
        let api = self.dynamic(api_version, kind, namespace)?;
        match self.block_on(api.delete(name, &DeleteParams::default())) {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {kind} {namespace}/{name}")),
        }
    }
}
