//! Who writes NetworkFault status: the holder of one `coordination.k8s.io` Lease. Every daemon
//! computes the same status; one writes it, so writes do not grow with nodes.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

pub const LEASE_NAME: &str = "injector-status-writer";

pub struct Leader {
    api: Api<Lease>,
    me: String,
    ttl: Duration,
}

impl Leader {
    pub fn new(client: Client, namespace: &str, me: &str, ttl: Duration) -> Self {
        Leader {
            api: Api::namespaced(client, namespace),
            me: me.to_string(),
            ttl,
        }
    }

    /// Takes or renews the Lease; whether this daemon holds it now. A Lease whose holder did
    /// not renew it within its duration is taken over; a race is settled by resourceVersion.
    pub async fn hold(&self) -> kube::Result<bool> {
        let now = Timestamp::now();
        let spec = |acquired: Option<MicroTime>, transitions: i32| LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(self.ttl.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(None, 0)),
            };
            return settle(self.api.create(&PostParams::default(), &lease).await);
        };
        let cur = lease.spec.clone().unwrap_or_default();
        let mine = cur.holder_identity.as_deref() == Some(&self.me);
        let expired = match (&cur.renew_time, cur.lease_duration_seconds) {
            (Some(t), Some(d)) => t.0 + Duration::from_secs(d.max(0) as u64) < now,
            _ => true,
        };
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = cur.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine { cur.acquire_time } else { None };
        lease.spec = Some(spec(acquired, transitions));
        settle(
            self.api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await,
        )
    }
}

/// Held when the write went through; not held when another daemon won the race.
fn settle(r: kube::Result<Lease>) -> kube::Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
