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

use super::ResponseBody;
use crate::{
    instruments::{self, Validation},
    response::{AuthRejection, RejectionKind, Responder},
    store::{StoreError, TokenStatus},
    user::AuthedUser,
};

/// The future of [`MpAuthService`](super::MpAuthService): resolves to the inner
/// service's response once the token checks out, or to the rejection. `V` is the token
/// store's validation future, held in place: nothing on this path is boxed.
#[pin_project]
pub struct ResponseFuture<S, ReqBody, V>
where
    S: Service<Request<ReqBody>>,
{
    #[pin]
    state: State<S, ReqBody, S::Future, V>,
}

// One per request in flight, never moved once polled: its size costs nothing an
// allocation to shrink it would not cost more.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = StateProj)]
enum State<S, ReqBody, F, V> {
    /// Waiting for the token store; the rest is needed once it answers.
    Checking {
        #[pin]
        check: V,
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
    responder: Arc<Responder>,
}

impl<S, ReqBody, V> ResponseFuture<S, ReqBody, V>
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
        check: V,
        inner: S,
        request: Request<ReqBody>,
        user: AuthedUser,
        responder: Arc<Responder>,
    ) -> Self {
        Self {
            state: State::Checking {
                check,
                pending: Some(Pending {
                    inner,
                    request,
                    user,
                    responder,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody, V> Future for ResponseFuture<S, ReqBody, V>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    V: Future<Output = Result<TokenStatus, StoreError>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Checking { check, pending } => {
                    let verdict = ready!(check.poll(cx));
                    let Pending {
                        mut inner,
                        mut request,
                        user,
                        responder,
                    } = pending.take().expect("polled after completion");
                    let rejection = match judge(verdict, &responder) {
                        Ok(()) => {
                            request.extensions_mut().insert(user);
                            let future = inner.call(request);
                            state.set(State::Calling { future });
                            continue;
                        }
                        Err(rejection) => rejection.for_request(request.headers()),
                    };
                    state.set(State::Rejected {
                        rejection: Some(rejection),
                    });
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

/// What the layer does with the store's answer: `Ok` lets the request through, else
/// the rejection (not yet fitted to the request). Counts and logs it.
pub(super) fn judge(
    verdict: Result<TokenStatus, StoreError>,
    responder: &Responder,
) -> Result<(), AuthRejection> {
    match verdict {
        Ok(TokenStatus::Live { .. }) => {
            instruments::validation(Validation::Ok);
            Ok(())
        }
        Ok(TokenStatus::SignedOut(reason)) => {
            tracing::debug!(rejection = "signed_out", %reason, "request rejected");
            instruments::validation(Validation::SignedOut);
            Err(responder.signed_out(reason))
        }
        Ok(_) => {
            tracing::debug!(rejection = "invalid_token", "request rejected");
            instruments::validation(Validation::Invalid);
            Err(responder.reject(RejectionKind::InvalidToken))
        }
        Err(error) => {
            tracing::warn!(%error, "token store unavailable; answering 503");
            instruments::validation(Validation::Unavailable);
            Err(responder.reject(RejectionKind::StoreUnavailable))
        }
    }
}

impl<S, ReqBody, V> fmt::Debug for ResponseFuture<S, ReqBody, V>
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
