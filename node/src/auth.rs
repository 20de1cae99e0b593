//! The internal credential every node-to-node and gateway-to-node call carries (ARCHITECTURE.md):
//! HMAC-SHA256 of `launcher-internal` keyed with the secure-cookie-key, plus the cluster id.

use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// Metadata key of the cluster id.
pub const CLUSTER_ID_HEADER: &str = "launcher-cluster-id";

/// Reads the secure-cookie-key (`launcher_credentials::load_key`).
pub use launcher_credentials::load_key;

/// The internal credential and cluster id, attached to outgoing calls and checked on incoming ones.
#[derive(Clone)]
pub struct InternalAuth {
    token: Arc<str>,
    cluster_id: Arc<RwLock<String>>,
}

impl std::fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalAuth")
            .field("cluster_id", &self.cluster_id())
            .finish_non_exhaustive()
    }
}

impl InternalAuth {
    /// Derives the credential from the secure-cookie-key.
    pub fn new(key: &[u8], cluster_id: String) -> Self {
        let token = launcher_credentials::internal_credential(key);
        InternalAuth {
            token: token.into(),
            cluster_id: Arc::new(RwLock::new(cluster_id)),
        }
    }

    /// The cluster id this node belongs to (empty before it joined one).
    pub fn cluster_id(&self) -> String {
        self.cluster_id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Binds this node to a cluster.
    pub fn set_cluster_id(&self, id: &str) {
        *self.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = id.to_string();
    }

    /// Checks only the credential (discovery must answer callers of any cluster, so they can
    /// tell they knocked on the wrong door). Signatures are compared in constant time.
    pub fn check_credential<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(self.token.as_bytes())) {
            return Err(Status::unauthenticated(
                "missing or wrong internal credential: every node and gateway must share the same secure-cookie-key",
            ));
        }
        Ok(())
    }

    /// Checks an incoming call. `allow_unbound` admits callers that do not know the cluster id
    /// yet (discovery, join, status); the credential is always required.
    pub fn check<T>(&self, req: &Request<T>, allow_unbound: bool) -> Result<(), Status> {
        self.check_credential(req)?;
        let theirs = req
            .metadata()
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let ours = self.cluster_id();
        if theirs.is_empty() || ours.is_empty() {
            if allow_unbound {
                return Ok(());
            }
            return Err(Status::permission_denied(format!(
                "this call needs a cluster id on both sides (caller: '{theirs}', this node: '{ours}')"
            )));
        }
        if theirs != ours {
            return Err(Status::permission_denied(format!(
                "call for cluster {theirs} refused: this node belongs to cluster {ours}"
            )));
        }
        Ok(())
    }
}

impl tonic::service::Interceptor for InternalAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let md = req.metadata_mut();
        md.insert(
            "authorization",
            MetadataValue::try_from(&*self.token).expect("hex is valid metadata"),
        );
        if let Ok(v) = MetadataValue::try_from(self.cluster_id()) {
            md.insert(CLUSTER_ID_HEADER, v);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn credential_and_cluster_are_checked() {
        let mut a = InternalAuth::new(&[7u8; 32], "c1".into());
        let ok = a.call(Request::new(())).unwrap();
        assert!(a.check(&ok, false).is_ok());
        let mut other_key = InternalAuth::new(&[8u8; 32], "c1".into());
        let bad = other_key.call(Request::new(())).unwrap();
        assert_eq!(
            a.check(&bad, true).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut other_cluster = InternalAuth::new(&[7u8; 32], "c2".into());
        let wrong = other_cluster.call(Request::new(())).unwrap();
        assert_eq!(
            a.check(&wrong, true).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let mut fresh = InternalAuth::new(&[7u8; 32], String::new());
        let unbound = fresh.call(Request::new(())).unwrap();
        assert!(a.check(&unbound, true).is_ok());
        assert!(a.check(&unbound, false).is_err());
        assert!(a.check(&Request::new(()), true).is_err());
    }
}
