//! The daemon's HTTP/JSON API: on a Unix socket (mode 0600) by default, on TCP only behind a bearer
//! token. Create, list, get, delete faults; abort and arm; status. Errors are 4xx with a message
//! that names the field, the value and the fix; a refused request changes nothing.

use std::collections::{BTreeMap, HashMap};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use injector_common::{FaultCounters, JudgeHook, ctrl};
use serde::Serialize;
use serde_json::json;

use super::{
    core::Shared,
    faultset::{AddOptions, ApiError, Entry},
};
use crate::{fault::spec::FaultSpec, kernel::monotonic_ns};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// A fault as the API shows it.
#[derive(Serialize)]
pub struct FaultView {
    pub name: String,
    pub slot: u32,
    pub active: bool,
    pub remaining_s: f64,
    pub forced: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carved: Vec<super::records::Carved>,
    pub spec: FaultSpec,
    /// By hook: veth_egress, overlay_egress, xdp_veth.
    pub counters: BTreeMap<&'static str, FaultCounters>,
}

fn view(e: &Entry, maps: &crate::kernel::Maps, now: u64) -> Result<FaultView, ApiError> {
    let mut counters = BTreeMap::new();
    for jh in JudgeHook::ALL {
        counters.insert(jh.name(), maps.fault_counters(e.slot, jh)?);
    }
    Ok(FaultView {
        name: e.record.spec.name.clone(),
        slot: e.slot,
        active: now >= e.record.start_ns && now < e.record.deadline_ns,
        remaining_s: e.record.deadline_ns.saturating_sub(now) as f64 / 1e9,
        forced: e.record.forced,
        carved: e.record.carved.clone(),
        spec: e.record.spec.clone(),
        counters,
    })
}

async fn list(State(s): State<Shared>) -> Result<Json<Vec<FaultView>>, ApiError> {
    let c = s.lock();
    let now = monotonic_ns();
    Ok(Json(
        c.faults
            .iter()
            .map(|e| view(e, &c.maps, now))
            .collect::<Result<_, _>>()?,
    ))
}

async fn get_one(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<FaultView>, ApiError> {
    let c = s.lock();
    let e = c.faults.get(&name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "name: no fault named '{name}'; `GET /v1/faults` lists them"
        ))
    })?;
    Ok(Json(view(e, &c.maps, monotonic_ns())?))
}

fn flag(q: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match q.get(key).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(ApiError::BadRequest(format!(
            "{key}: '{v}' is not a boolean; use {key}=true or {key}=false"
        ))),
    }
}

async fn create(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if let Some(k) = q.keys().find(|k| *k != "force" && *k != "replace") {
        return Err(ApiError::BadRequest(format!(
            "{k}: unknown query parameter; use force=true or replace=true"
        )));
    }
    let (force, replace) = (flag(&q, "force")?, flag(&q, "replace")?);
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("body: not UTF-8 JSON".into()))?;
    let specs = crate::fault::spec::parse_list(text).map_err(ApiError::BadRequest)?;
    let mut guard = s.lock();
    let c = &mut *guard;
    let opts = AddOptions {
        force,
        replace,
        delay: c.delay_support(),
        protected: &c.protected,
    };
    let names = c.faults.add(&mut c.maps, specs, opts, monotonic_ns())?;
    super::fq::sync(c);
    // A new fault set re-arms (as after an abort, applying again is a deliberate act).
    c.maps.set_ctrl(ctrl::ARMED, 1)?;
    tracing::info!(faults = ?names, force, "faults added");
    let carved: BTreeMap<&str, _> = names
        .iter()
        .filter_map(|n| c.faults.get(n).map(|e| (n.as_str(), &e.record.carved)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "created": names, "carved": carved })),
    ))
}

async fn delete_one(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut guard = s.lock();
    let c = &mut *guard;
    c.faults.remove(&mut c.maps, &name)?;
    super::fq::sync(c);
    tracing::info!(fault = %name, "fault deleted");
    Ok(Json(json!({ "deleted": [name] })))
}

async fn clear(State(s): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut guard = s.lock();
    let c = &mut *guard;
    let n = c.faults.clear(&mut c.maps)?;
    super::fq::sync(c);
    tracing::info!(faults = n, "all faults deleted");
    Ok(Json(json!({ "deleted_count": n })))
}

async fn set_armed(s: &Shared, armed: bool) -> Result<Json<serde_json::Value>, ApiError> {
    s.lock().maps.set_ctrl(ctrl::ARMED, u64::from(armed))?;
    tracing::warn!(armed, "armed word written");
    Ok(Json(json!({ "armed": armed })))
}

async fn abort(State(s): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    set_armed(&s, false).await
}

async fn arm(State(s): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    set_armed(&s, true).await
}

async fn status(State(s): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let c = s.lock();
    let now = monotonic_ns();
    let faults: Vec<_> = c
        .faults
        .iter()
        .map(|e| json!({ "name": e.record.spec.name, "remaining_s": e.record.deadline_ns.saturating_sub(now) as f64 / 1e9 }))
        .collect();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "bpffs": c.bpffs,
        "ready": c.ready,
        "armed": c.maps.ctrl(ctrl::ARMED)? == 1,
        "heartbeat_age_ms": now.saturating_sub(c.maps.ctrl(ctrl::HEARTBEAT_NS)?) / 1_000_000,
        "grace_s": c.maps.ctrl(ctrl::GRACE_NS)? as f64 / 1e9,
        "features": c.features,
        "interfaces": c.ifaces,
        "attach_errors": c.attach_errors,
        "fq": { "installed": c.fq.installed, "not_usable": c.fq.refused },
        "protected": c.protected,
        "faults": faults,
    })))
}

async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such endpoint; see /v1/status, /v1/faults, /v1/faults/NAME, /v1/abort, /v1/arm".into(),
    )
}

/// The API routes.
pub fn router(s: Shared) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/faults", get(list).post(create).delete(clear))
        .route("/v1/faults/{name}", get(get_one).delete(delete_one))
        .route("/v1/abort", post(abort))
        .route("/v1/arm", post(arm))
        .fallback(not_found)
        .with_state(s)
}

/// The API routes behind `Authorization: Bearer <token>` (for the TCP listener).
pub fn router_with_token(s: Shared, token: String) -> Router {
    router(s).layer(middleware::from_fn(move |h: HeaderMap, req: Request, next: Next| {
        let token = token.clone();
        async move {
            let ok = h.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
            if ok {
                next.run(req).await
            } else {
                (StatusCode::UNAUTHORIZED, Json(json!({ "error": "authorization: missing or wrong bearer token; send `Authorization: Bearer <token>`" }))).into_response()
            }
        }
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
