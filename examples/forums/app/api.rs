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
use tidings::axum::Rejection;
use tidings::axum::Snapshot;
use tidings::{Batch, Identity};

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
        .route("/api/logout", axum::routing::post(logout))
}

// ---- who is asking -------------------------------------------------------------

/// The example's users, picked in the page and kept in the `user` cookie.
/// There is no password: this shows per-filter authorization and
/// revocation, not authentication.
pub const USERS: [&str; 2] = ["ana", "ben"];

/// The title of the private forum, which only its members see.
pub const PRIVATE_FORUM: &str = "Staff";
const PRIVATE_MEMBERS: [&str; 1] = ["ana"];

/// Non-members' sessions belong to this audience: when a forum becomes
/// private, they re-authorize and their permit hook learns it.
const OUTSIDERS: &str = "outsiders";

/// The user named by the `user` cookie, if it is one of [`USERS`].
#[derive(Debug, Clone, Copy)]
pub struct User(pub Option<&'static str>);

impl User {
    pub fn from_headers(headers: &axum::http::HeaderMap) -> User {
        let cookies = headers.get_all(axum::http::header::COOKIE).into_iter().filter_map(|v| v.to_str().ok());
        let named = cookies
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix("user="))
            .find_map(|name| USERS.into_iter().find(|u| *u == name));
        User(named)
    }

    /// Whether this user may see `forum`.
    pub fn sees(&self, forum: &forum::Model) -> bool {
        forum.title != PRIVATE_FORUM || self.0.is_some_and(|u| PRIVATE_MEMBERS.contains(&u))
    }

    /// The 404 a forum this user may not see is answered with.
    fn check(&self, forum: &forum::Model) -> Result<(), ApiError> {
        match self.sees(forum) {
            true => Ok(()),
            false => Err(repository::Error::NotFound("forum", forum.id).into()),
        }
    }

    /// The 404 a post in a forum this user may not see is answered with:
    /// the same as for a post that does not exist.
    async fn check_post(&self, repo: &repository::Repository, id: i32) -> Result<(), ApiError> {
        let post = repo.post(id).await?;
        match self.sees(&repo.forum(post.forum_id).await?) {
            true => Ok(()),
            false => Err(repository::Error::NotFound("post", id).into()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(User::from_headers(&parts.headers))
    }
}

/// The authorize hook of the WebSocket and SSE routes: who the cookie
/// names, and a permit hook that refuses the posts of the forums this user
/// may not see (and unfiltered posts, and `*`, which would include them).
/// The private forums are read at connect; they change only by a create or
/// rename, which makes outsiders re-authorize.
pub fn authorize(repo: repository::Repository) -> impl Fn(&Parts) -> BoxedIdentity + Send + Sync + 'static {
    move |parts| {
        let user = User::from_headers(&parts.headers);
        let repo = repo.clone();
        Box::pin(async move {
            let forums =
                repo.forums().await.map_err(|_| Rejection::unauthorized("cannot read the forums"))?;
            let hidden: Vec<i64> = forums.iter().filter(|f| !user.sees(f)).map(|f| i64::from(f.id)).collect();
            let identity = match user.0 {
                Some(name) => Identity::user(name).audience(format!("user:{name}")),
                None => Identity::anonymous(),
            };
            let outsider = !user.0.is_some_and(|u| PRIVATE_MEMBERS.contains(&u));
            let identity = if outsider { identity.audience(OUTSIDERS) } else { identity };
            Ok(identity.permit(move |collection, filter| match collection {
                // Posts of the forums this user sees: named by a filter, or
                // all of them when none is hidden from it.
                "posts" => match filter.and_then(|f| f.values("forum_id")) {
                    Some(ids) => ids.iter().all(|id| id.as_i64().is_some_and(|id| !hidden.contains(&id))),
                    None => hidden.is_empty(),
                },
                "*" => hidden.is_empty(),
                _ => true,
            }))
        })
    }
}

/// What [`authorize`] returns for each connection.
pub type BoxedIdentity =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Identity, Rejection>> + Send + 'static>>;

#[derive(Deserialize)]
pub struct LogoutInput {
    user: String,
}

/// `POST /api/logout` `{"user": "ana"}`: closes that user's sessions with
/// 4401, so its tabs re-authorize. The page clears its cookie before it
/// asks (so the tabs re-authorize as nobody); the user comes in the body
/// rather than the cookie for that reason. (Without passwords anyone may
/// name anyone: this is a demo of revocation, not of authentication.)
async fn logout(State(app): State<AppState>, ApiJson(input): ApiJson<LogoutInput>) -> ApiResult<StatusCode> {
    let Some(name) = USERS.into_iter().find(|u| *u == input.user) else {
        return Err(ApiError::invalid(format!("user must be one of {USERS:?}")));
    };
    app.notifier.reauthenticate_user(name);
    Ok(StatusCode::NO_CONTENT)
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
    user: User,
) -> ApiResult<(Snapshot, Json<Vec<forum::Model>>)> {
    let forums = app.repo.forums().await?.into_iter().filter(|f| user.sees(f)).collect();
    Ok((snapshot, Json(forums)))
}

async fn get_forum(State(app): State<AppState>, user: User, Id(id): Id) -> ApiResult<Json<forum::Model>> {
    let forum = app.repo.forum(id).await?;
    user.check(&forum)?;
    Ok(Json(forum))
}

/// After a forum became private: outsiders' sessions re-authorize, and
/// their permit hooks then refuse its posts.
fn recheck_outsiders(app: &AppState, forum: &forum::Model) {
    if forum.title == PRIVATE_FORUM {
        app.notifier.reauthenticate_audience(OUTSIDERS);
    }
}

async fn create_forum(
    State(app): State<AppState>,
    batch: Batch,
    ApiJson(input): ApiJson<ForumInput>,
) -> ApiResult<(StatusCode, Json<forum::Model>)> {
    let title = required("title", input.title, MAX_TITLE)?;
    let forum = app.repo.create_forum(&batch, title).await?;
    recheck_outsiders(&app, &forum);
    Ok((StatusCode::CREATED, Json(forum)))
}

// Writes by id check the user like reads do: a forum (or a post in one)
// the user may not see answers 404, whoever knows its id.
async fn rename_forum(
    State(app): State<AppState>,
    batch: Batch,
    user: User,
    Id(id): Id,
    ApiJson(input): ApiJson<ForumInput>,
) -> ApiResult<Json<forum::Model>> {
    user.check(&app.repo.forum(id).await?)?;
    let title = required("title", input.title, MAX_TITLE)?;
    let forum = app.repo.rename_forum(&batch, id, title).await?;
    recheck_outsiders(&app, &forum);
    Ok(Json(forum))
}

async fn delete_forum(
    State(app): State<AppState>,
    batch: Batch,
    user: User,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    user.check(&app.repo.forum(id).await?)?;
    app.repo.delete_forum(&batch, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_posts(
    snapshot: Snapshot,
    State(app): State<AppState>,
    user: User,
    Id(id): Id,
) -> ApiResult<(Snapshot, Json<Vec<post::Model>>)> {
    user.check(&app.repo.forum(id).await?)?;
    Ok((snapshot, Json(app.repo.posts(id).await?)))
}

async fn create_post(
    State(app): State<AppState>,
    batch: Batch,
    user: User,
    Id(forum_id): Id,
    ApiJson(input): ApiJson<PostInput>,
) -> ApiResult<(StatusCode, Json<post::Model>)> {
    user.check(&app.repo.forum(forum_id).await?)?;
    let body = required("body", input.body, MAX_BODY)?;
    let post = app.repo.create_post(&batch, forum_id, body).await?;
    Ok((StatusCode::CREATED, Json(post)))
}

async fn edit_post(
    State(app): State<AppState>,
    batch: Batch,
    user: User,
    Id(id): Id,
    ApiJson(input): ApiJson<PostInput>,
) -> ApiResult<Json<post::Model>> {
    user.check_post(&app.repo, id).await?;
    let body = required("body", input.body, MAX_BODY)?;
    Ok(Json(app.repo.edit_post(&batch, id, body).await?))
}

async fn delete_post(
    State(app): State<AppState>,
    batch: Batch,
    user: User,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    user.check_post(&app.repo, id).await?;
    app.repo.delete_post(&batch, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
