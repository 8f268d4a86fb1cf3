//! Who may open a session: the checks every transport (WebSocket, SSE) runs
//! before it starts one, each answered with a JSON error when it fails.

use axum::extract::Query;
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;

use super::{Rejection, Settings, origin};
use crate::ErrorCode;
use crate::Identity;
use crate::hub::{Hub, Subscriptions};

/// The query string of the session routes.
#[derive(Debug, Default, Deserialize)]
struct ConnectParams {
    /// The last cursor the client saw, to resume from.
    cursor: Option<String>,
    /// Comma-separated collections; all when absent.
    collections: Option<String>,
    /// Filters: a JSON object from collection names to a filter (an object)
    /// or alternatives (an array of objects).
    #[serde(rename = "where")]
    filters: Option<String>,
}

/// A client that passed every check.
pub(crate) struct Admission {
    pub(crate) identity: Identity,
    pub(crate) subscriptions: Subscriptions,
    /// The `cursor` query parameter, if given.
    pub(crate) cursor: Option<String>,
}

/// Runs the checks in order: shutting down, origin, query, the
/// application's authorize hook, and the requested collections.
pub(crate) async fn admit(hub: &Hub, settings: &Settings, parts: &Parts) -> Result<Admission, Rejection> {
    if hub.is_closing() {
        return Err(Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "the server is shutting down",
        ));
    }
    origin::check(&settings.origins, &parts.headers)?;
    let Query(params) = Query::<ConnectParams>::try_from_uri(&parts.uri)
        .map_err(|e| Rejection::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text()))?;
    let identity = match &settings.authorize {
        Some(authorize) => authorize(parts).await?,
        None => Identity::anonymous(),
    };
    if identity.expiry().is_some_and(|at| at <= std::time::Instant::now()) {
        return Err(Rejection::unauthorized("the identity has expired: authenticate again"));
    }
    let subscriptions =
        Subscriptions::from_query(params.collections.as_deref(), params.filters.as_deref())
            .map_err(|message| Rejection::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, message))?;
    if let Some(bad) = subscriptions.first_forbidden(&identity) {
        return Err(Rejection::forbidden(format!(
            "not allowed to subscribe to `{bad}` (with its filter, if any)"
        )));
    }
    Ok(Admission { identity, subscriptions, cursor: params.cursor })
}
