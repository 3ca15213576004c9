//! The response future of [`MpAuthService`](super::MpAuthService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project::pin_project;
use tower_service::Service;

use super::{Policy, ResponseBody};
use crate::{
    extract::AuthedUser,
    rejection::{AuthRejection, RejectionKind},
    store::StoreError,
};

type Check = Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send>>;

/// Resolves to the inner service's response once the token checks out, or to the
/// rejection.
#[pin_project]
pub struct ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    #[pin]
    state: State<S, ReqBody, S::Future>,
}

#[pin_project(project = StateProj)]
enum State<S, ReqBody, F> {
    /// Waiting for the token store; the rest is needed once it answers.
    Checking {
        check: Check,
        pending: Option<Pending<S, ReqBody>>,
    },
    Calling {
        #[pin]
        future: F,
    },
    Rejected {
        rejection: Option<AuthRejection>,
    },
}

struct Pending<S, ReqBody> {
    inner: S,
    request: Request<ReqBody>,
    user: AuthedUser,
    policy: Arc<Policy>,
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn call(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
        }
    }

    pub(super) fn reject(rejection: AuthRejection) -> Self {
        Self {
            state: State::Rejected {
                rejection: Some(rejection),
            },
        }
    }

    pub(super) fn check(
        check: Check,
        inner: S,
        request: Request<ReqBody>,
        user: AuthedUser,
        policy: Arc<Policy>,
    ) -> Self {
        Self {
            state: State::Checking {
                check,
                pending: Some(Pending {
                    inner,
                    request,
                    user,
                    policy,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Checking { check, pending } => {
                    let verdict = ready!(check.as_mut().poll(cx));
                    let Pending {
                        mut inner,
                        mut request,
                        user,
                        policy,
                    } = pending.take().expect("polled after completion");
                    let next = match verdict {
                        Ok(true) => {
                            request.extensions_mut().insert(user);
                            State::Calling {
                                future: inner.call(request),
                            }
                        }
                        Ok(false) => {
                            tracing::debug!(rejection = "invalid_token", "request rejected");
                            State::Rejected {
                                rejection: Some(policy.reject(RejectionKind::InvalidToken)),
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "token store unavailable; answering 503");
                            State::Rejected {
                                rejection: Some(policy.reject(RejectionKind::StoreUnavailable)),
                            }
                        }
                    };
                    state.set(next);
                }
                StateProj::Calling { future } => {
                    return future
                        .poll(cx)
                        .map(|result| result.map(|response| response.map(ResponseBody::inner)));
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection.take().expect("polled after completion");
                    return Poll::Ready(Ok(rejection.into_response_with(ResponseBody::rejection)));
                }
            }
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking",
            State::Calling { .. } => "calling",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
