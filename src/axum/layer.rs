//! The request layer: notifications queued during a request go out after
//! the response, and only if it is a success; the `tidings-session` header
//! names the session that made the request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Request, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::Rejection;
use super::SESSION_HEADER;
use crate::ErrorCode;
use crate::{Batch, Notifier, SessionToken};

/// A layer that gives each request a [`Batch`] (extract it in the handler)
/// and commits it once the response is produced, if its status is 2xx. It
/// also lets handlers extract a [`Snapshot`](crate::axum::Snapshot). On
/// any other status, or if the handler fails or panics, the batch is dropped
/// and nothing is sent.
///
/// A [`sea_orm::Transaction`](crate::sea_orm::Transaction) begun with the
/// request's batch (or a [`child`](Batch::child) of it) is the exception
/// when the backplane publishes inside transactions (the
/// [`Outbox`](crate::backplane::Outbox), PostgreSQL NOTIFY): its
/// notifications are committed with its data and go out then, whatever the
/// response, since the change they describe has happened.
///
/// The batch is marked with the token in the `tidings-session` header, so
/// the session that made the request does not receive the notifications it
/// caused. A header that is not a token is answered with 400 before the
/// handler runs.
pub fn layer(notifier: &Notifier) -> NotifyLayer {
    NotifyLayer { notifier: notifier.clone() }
}

/// See [`layer`].
#[derive(Clone, Debug)]
pub struct NotifyLayer {
    notifier: Notifier,
}

impl<S> Layer<S> for NotifyLayer {
    type Service = NotifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NotifyService { inner, notifier: self.notifier.clone() }
    }
}

/// The service [`NotifyLayer`] wraps around the application's routes.
#[derive(Clone, Debug)]
pub struct NotifyService<S> {
    inner: S,
    notifier: Notifier,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> Service<Request<ReqBody>> for NotifyService<S>
where
    S: Service<Request<ReqBody>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let origin = match origin(request.headers()) {
            Ok(origin) => origin,
            Err(rejection) => return Box::pin(async move { Ok(rejection.into_response()) }),
        };
        let batch = self.notifier.batch_with_origin(origin);
        request.extensions_mut().insert(batch.clone());
        // For the `Snapshot` extractor.
        request.extensions_mut().insert(self.notifier.clone());
        // The clone that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            if response.status().is_success() {
                batch.commit();
            } else {
                batch.discard();
            }
            Ok(response)
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Batch {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Batch>().cloned().ok_or_else(|| {
            Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::MissingLayer,
                "the handler extracts a tidings::Batch but tidings::axum::layer is not applied to its route",
            )
        })
    }
}

/// The token of the session that made this request, from the
/// `tidings-session` header: for handlers that call the [`Notifier`] directly
/// and want [`Notification::with_origin`](crate::Notification::with_origin).
///
/// Only that session knows its token, so no one else can make a session
/// miss notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginToken(pub Option<SessionToken>);

impl<S: Send + Sync> FromRequestParts<S> for OriginToken {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        origin(&parts.headers).map(OriginToken)
    }
}

fn origin(headers: &http::HeaderMap) -> Result<Option<SessionToken>, Rejection> {
    let Some(value) = headers.get(&SESSION_HEADER) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    if let Ok(token) = value.parse() {
        return Ok(Some(token));
    }
    Err(Rejection::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadSessionHeader,
        "the tidings-session header must be the `token` from a hello frame",
    ))
}
