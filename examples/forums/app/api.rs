//! The JSON API. Handlers validate input, call the repository with the
//! request's [`Batch`] and map errors to `{"error": "...", "code": "..."}`.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tidings::Batch;
use tidings::axum::Snapshot;

use super::AppState;
use super::entity::{forum, post};
use super::repository;

/// The longest forum title and post body accepted, in characters.
const MAX_TITLE: usize = 200;
const MAX_BODY: usize = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/forums", get(list_forums).post(create_forum))
        .route("/api/forums/{id}", get(get_forum).patch(rename_forum).delete(delete_forum))
        .route("/api/forums/{id}/posts", get(list_posts).post(create_post))
        .route("/api/posts/{id}", patch(edit_post).delete(delete_post))
}

// ---- errors ----------------------------------------------------------------

/// An error answered as `{"error": "...", "code": "..."}` with a 4xx or 5xx.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        (self.status, Json(body)).into_response()
    }
}

impl From<repository::Error> for ApiError {
    fn from(e: repository::Error) -> Self {
        match e {
            repository::Error::NotFound(what, id) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {id} not found"))
            }
            repository::Error::Db(e) => {
                tracing::error!(error = %e, "database error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database", "database error")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "invalid_field",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ => "bad_request",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

/// Answers unknown routes with a JSON 404 too.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Answers a known route with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

// ---- extractors --------------------------------------------------------------

/// `axum::Json`, with its rejections answered in the API's JSON error format
/// (axum's own are plain text).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// The `{id}` path segment, with a JSON 400 when it is not an integer.
pub struct Id(pub i32);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<i32>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Id(id))
            .map_err(|e: PathRejection| ApiError::new(e.status(), "invalid_id", e.body_text()))
    }
}

// ---- inputs ------------------------------------------------------------------

#[derive(Deserialize)]
pub struct ForumInput {
    title: String,
}

#[derive(Deserialize)]
pub struct PostInput {
    body: String,
}

/// Trims `value` and checks it is neither empty nor longer than `max`, and
/// that every database can store it: PostgreSQL text cannot hold NUL, so it
/// is refused here, the same whichever database is behind.
fn required(field: &str, value: String, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    if value.contains('\0') {
        // 400 rather than 422: not a value out of range, but text no
        // database behind the API can store.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field} must not contain NUL characters (U+0000)"),
        ));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(format!("{field} is longer than {max} characters")));
    }
    Ok(value.to_owned())
}

// ---- handlers ----------------------------------------------------------------

type ApiResult<T> = Result<T, ApiError>;

// Reads take a snapshot cursor first (`tidings-cursor`), so a page that
// loads through JSON resumes from it: nothing written after the read is
// missed.
async fn list_forums(
    snapshot: Snapshot,
    State(app): State<AppState>,
) -> ApiResult<(Snapshot, Json<Vec<forum::Model>>)> {
    Ok((snapshot, Json(app.repo.forums().await?)))
}

async fn get_forum(State(app): State<AppState>, Id(id): Id) -> ApiResult<Json<forum::Model>> {
    Ok(Json(app.repo.forum(id).await?))
}

async fn create_forum(
    State(app): State<AppState>,
    batch: Batch,
    ApiJson(input): ApiJson<ForumInput>,
) -> ApiResult<(StatusCode, Json<forum::Model>)> {
    let title = required("title", input.title, MAX_TITLE)?;
    let forum = app.repo.create_forum(&batch, title).await?;
    Ok((StatusCode::CREATED, Json(forum)))
}

async fn rename_forum(
    State(app): State<AppState>,
    batch: Batch,
    Id(id): Id,
    ApiJson(input): ApiJson<ForumInput>,
) -> ApiResult<Json<forum::Model>> {
    let title = required("title", input.title, MAX_TITLE)?;
    Ok(Json(app.repo.rename_forum(&batch, id, title).await?))
}

async fn delete_forum(State(app): State<AppState>, batch: Batch, Id(id): Id) -> ApiResult<StatusCode> {
    app.repo.delete_forum(&batch, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_posts(
    snapshot: Snapshot,
    State(app): State<AppState>,
    Id(id): Id,
) -> ApiResult<(Snapshot, Json<Vec<post::Model>>)> {
    Ok((snapshot, Json(app.repo.posts(id).await?)))
}

async fn create_post(
    State(app): State<AppState>,
    batch: Batch,
    Id(forum_id): Id,
    ApiJson(input): ApiJson<PostInput>,
) -> ApiResult<(StatusCode, Json<post::Model>)> {
    let body = required("body", input.body, MAX_BODY)?;
    let post = app.repo.create_post(&batch, forum_id, body).await?;
    Ok((StatusCode::CREATED, Json(post)))
}

async fn edit_post(
    State(app): State<AppState>,
    batch: Batch,
    Id(id): Id,
    ApiJson(input): ApiJson<PostInput>,
) -> ApiResult<Json<post::Model>> {
    let body = required("body", input.body, MAX_BODY)?;
    Ok(Json(app.repo.edit_post(&batch, id, body).await?))
}

async fn delete_post(State(app): State<AppState>, batch: Batch, Id(id): Id) -> ApiResult<StatusCode> {
    app.repo.delete_post(&batch, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
