//! Which skus a layer accepts: one, a fixed set, or the apps of a registry as they are
//! now.

use std::sync::Arc;

#[cfg(feature = "wechat")]
use arc_swap::ArcSwap;

use crate::token::Sku;

#[cfg(feature = "wechat")]
/// The skus of the apps a registry holds right now, each with its app id, swapped
/// whole when an app is added, replaced or removed, so that reading it on a request
/// takes no lock.
#[derive(Debug, Default)]
pub(crate) struct LiveSkus(ArcSwap<Vec<LiveSku>>);

#[cfg(feature = "wechat")]
/// A sku a registry serves, and the app it is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveSku {
    pub(crate) sku: Sku,
    pub(crate) app_id: Arc<str>,
}

#[cfg(feature = "wechat")]
impl LiveSkus {
    /// Replaces the list.
    pub(crate) fn set(&self, skus: Vec<LiveSku>) {
        self.0.store(Arc::new(skus));
    }

    /// The list as it is now.
    pub(crate) fn get(&self) -> Arc<Vec<LiveSku>> {
        self.0.load_full()
    }

    /// The sku in the list that is `sku`, if any, when its app is one of `only` (or
    /// `only` is `None`).
    fn find(&self, sku: &str, only: Option<&[Arc<str>]>) -> Option<Sku> {
        let live = self.0.load();
        let found = live.iter().find(|s| s.sku == *sku)?;
        if only.is_some_and(|only| !only.contains(&found.app_id)) {
            return None;
        }
        Some(found.sku.clone())
    }
}

/// The skus a layer accepts.
#[derive(Debug, Clone)]
pub(super) enum Accepted {
    /// One sku: the common case, a comparison and no lookup.
    One(Sku),
    /// Any of a fixed few.
    Set(Arc<[Sku]>),
    /// Those of a registry's apps at the time of the request, or of the apps with the
    /// chosen app ids among them: looked up by app id on each request, so an app
    /// removed from the registry stops being accepted at once, and one replaced with a
    /// new sku is accepted under its new sku.
    #[cfg(feature = "wechat")]
    Live {
        live: Arc<LiveSkus>,
        only: Option<Arc<[Arc<str>]>>,
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
            Self::Live { live, only } => live.find(sku, only.as_deref()),
        }
    }
}
