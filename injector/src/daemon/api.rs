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
use injector_common::{JudgeHook, ctrl};

use super::{
    core::Shared,
    faultset::{AddOptions, ApiError, Entry, ms},
    health::{self, Listeners},
};
use crate::{
    api::{
        Armed, Carved, Cleared, Created, Deleted, ErrorBody, FaultBrief, FaultView, Features, Fq,
        Interface, ProtectedTarget, Status,
    },
    kernel::{attach, monotonic_ns},
};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let error = self.to_string();
        (code, Json(ErrorBody { error })).into_response()
    }
}

/// What the handlers share: the daemon's state, and which listeners serve (for readiness).
#[derive(Clone)]
pub struct ApiState {
    pub shared: Shared,
    pub listeners: Listeners,
    /// `--xdp`: drops are judged in XDP on the pod veths.
    pub xdp: bool,
}

fn view(e: &Entry, maps: &crate::kernel::Maps, now: u64) -> Result<FaultView, ApiError> {
    let mut counters = BTreeMap::new();
    for jh in JudgeHook::ALL {
        counters.insert(jh.name().to_string(), maps.fault_counters(e.slot, jh)?);
    }
    Ok(FaultView {
        name: e.record.spec.name.clone(),
        slot: e.slot,
        active: now >= e.record.start_ns && now < e.record.deadline_ns,
        remaining_s: remaining_s(e, now),
        forced: e.record.forced,
        carved: carved(e),
        resource: e.record.resource.clone(),
        spec: e.record.spec.clone(),
        counters,
    })
}

fn carved(e: &Entry) -> Vec<Carved> {
    e.record.carved.clone()
}

fn remaining_s(e: &Entry, now: u64) -> f64 {
    e.record.deadline_ns.saturating_sub(now) as f64 / 1e9
}

async fn list(State(s): State<ApiState>) -> Result<Json<Vec<FaultView>>, ApiError> {
    let c = s.shared.lock();
    let now = monotonic_ns();
    Ok(Json(
        c.faults
            .iter()
            .map(|e| view(e, &c.maps, now))
            .collect::<Result<_, _>>()?,
    ))
}

async fn get_one(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<FaultView>, ApiError> {
    let c = s.shared.lock();
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
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    if let Some(k) = q.keys().find(|k| *k != "force" && *k != "replace") {
        return Err(ApiError::BadRequest(format!(
            "{k}: unknown query parameter; use force=true or replace=true"
        )));
    }
    let (force, replace) = (flag(&q, "force")?, flag(&q, "replace")?);
    let t = std::time::Instant::now();
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("body: not UTF-8 JSON".into()))?;
    let specs = crate::fault::spec::parse_list(text).map_err(ApiError::BadRequest)?;
    let parsed = t.elapsed();
    let mut guard = s.shared.lock();
    let locked = t.elapsed();
    let c = &mut *guard;
    let opts = AddOptions {
        force,
        replace,
        delay: c.delay_support(),
        protected: &c.protected,
    };
    // A new fault set re-arms (as after an abort, applying again is a deliberate act): the armed
    // word is written right after the flip, before the tidying and the fq sync.
    let added = c
        .faults
        .add_arming(&mut c.maps, specs, opts, monotonic_ns());
    // After a failure to arm the change still happened: fq follows it as after a success.
    let added_at = t.elapsed();
    if matches!(added, Ok(_) | Err(ApiError::Internal(_))) {
        c.sync_fq();
    }
    // Where a POST's time goes (`RUST_LOG=injector=debug`): cumulative, from the body's arrival.
    tracing::debug!(
        parsed_ms = ms(parsed),
        locked_ms = ms(locked),
        added_ms = ms(added_at),
        synced_ms = ms(t.elapsed()),
        "POST /v1/faults"
    );
    let names = added?;
    tracing::info!(faults = ?names, force, "faults added");
    let carved = names
        .iter()
        .filter_map(|n| c.faults.get(n))
        .filter(|e| !e.record.carved.is_empty())
        .map(|e| (e.record.spec.name.clone(), carved(e)))
        .collect();
    let rate_mode = names
        .iter()
        .filter_map(|n| c.faults.get(n))
        .any(|e| matches!(e.fault.action, crate::fault::spec::Action::Rate(_)))
        .then(|| c.features.rate_mode().to_string());
    let created = Created {
        created: names,
        carved,
        rate_mode,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

async fn delete_one(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let mut guard = s.shared.lock();
    let c = &mut *guard;
    c.faults.remove(&mut c.maps, &name)?;
    c.sync_fq();
    tracing::info!(fault = %name, "fault deleted");
    Ok(Json(Deleted {
        deleted: vec![name],
    }))
}

async fn clear(State(s): State<ApiState>) -> Result<Json<Cleared>, ApiError> {
    let mut guard = s.shared.lock();
    let c = &mut *guard;
    let n = c.faults.clear(&mut c.maps)?;
    c.sync_fq();
    tracing::info!(faults = n, "all faults deleted");
    Ok(Json(Cleared { deleted_count: n }))
}

fn set_armed(s: &ApiState, armed: bool) -> Result<Json<Armed>, ApiError> {
    s.shared
        .lock()
        .maps
        .set_ctrl(ctrl::ARMED, u64::from(armed))?;
    tracing::warn!(armed, "armed word written");
    Ok(Json(Armed { armed }))
}

async fn abort(State(s): State<ApiState>) -> Result<Json<Armed>, ApiError> {
    set_armed(&s, false)
}

async fn arm(State(s): State<ApiState>) -> Result<Json<Armed>, ApiError> {
    set_armed(&s, true)
}

async fn status(State(s): State<ApiState>) -> Result<Json<Status>, ApiError> {
    let c = s.shared.lock();
    let now = monotonic_ns();
    let not_ready = health::not_ready(&c, &s.listeners);
    let early_judged = attach::early_judged(c.ifaces.values(), s.xdp);
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        bpffs: c.bpffs.clone(),
        ready: not_ready.is_empty(),
        not_ready,
        armed: c.maps.ctrl(ctrl::ARMED)? == 1,
        heartbeat_age_ms: now.saturating_sub(c.maps.ctrl(ctrl::HEARTBEAT_NS)?) / 1_000_000,
        grace_s: c.maps.ctrl(ctrl::GRACE_NS)? as f64 / 1e9,
        features: Features {
            tcx: c.features.tcx,
            fq: c.features.fq,
            btf: c.features.btf,
            edt_stamp: c.features.edt_stamp,
        },
        interfaces: c
            .ifaces
            .iter()
            .map(|(name, st)| {
                let i = Interface {
                    ifindex: st.ifindex,
                    role: st.role,
                    hooks: st.hooks.clone(),
                    adopted: st.adopted,
                    error: st.error.clone(),
                    early_judged: early_judged.contains(&st.ifindex),
                };
                (name.clone(), i)
            })
            .collect(),
        attach_errors: c.attach_errors,
        fq: Fq {
            installed: c.fq.installed.clone(),
            not_usable: c.fq.refused.clone(),
        },
        protected: c
            .protected
            .iter()
            .map(|p| ProtectedTarget {
                cidr: p.cidr.clone(),
                why: p.why.clone(),
            })
            .collect(),
        faults: c
            .faults
            .iter()
            .map(|e| FaultBrief {
                name: e.record.spec.name.clone(),
                remaining_s: remaining_s(e, now),
            })
            .collect(),
    }))
}

async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such endpoint; see /v1/status, /v1/faults, /v1/faults/NAME, /v1/abort, /v1/arm".into(),
    )
}

/// The API routes.
pub fn router(s: ApiState) -> Router {
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
pub fn router_with_token(s: ApiState, token: String) -> Router {
    router(s).layer(middleware::from_fn(
        move |h: HeaderMap, req: Request, next: Next| {
            let ok = bearer_ok(&h, &token);
            async move {
                if ok {
                    next.run(req).await
                } else {
                    let error = "authorization: missing or wrong bearer token; send \
                                 `Authorization: Bearer <token>`"
                        .to_string();
                    (StatusCode::UNAUTHORIZED, Json(ErrorBody { error })).into_response()
                }
            }
        },
    ))
}

/// Whether the request carries `token`, compared in constant time (subtle): how long the
/// comparison takes tells nothing about how much of a guess was right.
fn bearer_ok(h: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
}
