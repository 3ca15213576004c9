//! Which skus a layer accepts: one, a fixed set, or the apps of a registry as they are
//! now.

use std::sync::Arc;

#[cfg(feature = "wechat")]
use arc_swap::ArcSwap;

use crate::token::Sku;

#[cfg(feature = "wechat")]
/// The skus of the apps a registry holds right now, swapped whole when an app is added
/// or removed, so that reading it on a request takes no lock.
#[derive(Debug, Default)]
pub(crate) struct LiveSkus(ArcSwap<Vec<Sku>>);

#[cfg(feature = "wechat")]
impl LiveSkus {
    /// Replaces the list.
    pub(crate) fn set(&self, skus: Vec<Sku>) {
        self.0.store(Arc::new(skus));
    }

    /// The sku in the list that is `sku`, if any.
    fn find(&self, sku: &str) -> Option<Sku> {
        self.0.load().iter().find(|s| **s == *sku).cloned()
    }
}

/// The skus a layer accepts.
#[derive(Debug, Clone)]
pub(super) enum Accepted {
    /// One sku: the common case, a comparison and no lookup.
    One(Sku),
    /// Any of a fixed few.
    Set(Arc<[Sku]>),
    /// Those of a registry's apps at the time of the request, or of the chosen ones
    /// among them (an app removed from the registry stops being accepted at once).
    #[cfg(feature = "wechat")]
    Live {
        live: Arc<LiveSkus>,
        only: Option<Arc<[Sku]>>,
    },
}

impl Accepted {
    /// The accepted sku that `sku` names, to put in the request's
    /// [`AuthedUser`](crate::AuthedUser), or `None`.
    #[inline]
    pub(super) fn admit(&self, sku: &str) -> Option<Sku> {
        match self {
            Self::One(one) => (*one == *sku).then(|| one.clone()),
            Self::Set(set) => set.iter().find(|s| **s == *sku).cloned(),
            #[cfg(feature = "wechat")]
            Self::Live { live, only } => {
                if only
                    .as_ref()
                    .is_some_and(|only| !only.iter().any(|s| *s == *sku))
                {
                    return None;
                }
                live.find(sku)
            }
        }
    }
}
