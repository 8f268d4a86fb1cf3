//! `GET /`: the forum list and the selected forum's posts, rendered on the
//! server; the page's script keeps them live over the WebSocket.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use serde::Deserialize;

use super::AppState;
use super::api::{ApiError, USERS, User};
use super::entity::{forum, post};
use super::repository;

#[derive(Template)]
#[template(path = "index.html")]
struct Index {
    forums: Vec<forum::Model>,
    selected: Option<forum::Model>,
    posts: Vec<post::Model>,
    /// Who the `user` cookie names (empty: nobody), and who may be picked.
    user: &'static str,
    users: [&'static str; 2],
    /// The notifier's cursor before the page read the database: the script
    /// connects from there, so nothing that happened since is missed.
    cursor: String,
}

#[derive(Deserialize)]
pub struct PageQuery {
    /// The selected forum (`/?forum=ID`); anything but an id selects none.
    forum: Option<String>,
    /// `json`: render no data and no cursor; the page loads its lists
    /// through the JSON API, as a single-page app does, and resumes from
    /// the reads' snapshot cursors.
    load: Option<String>,
}

pub async fn index(
    State(app): State<AppState>,
    user: User,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, ApiError> {
    let name = user.0.unwrap_or("");
    if query.load.as_deref() == Some("json") {
        let page = Index {
            forums: Vec::new(),
            selected: None,
            posts: Vec::new(),
            user: name,
            users: USERS,
            cursor: String::new(),
        };
        return render(page);
    }
    let cursor = app.notifier.cursor().to_string();
    let forums: Vec<_> = app.repo.forums().await?.into_iter().filter(|f| user.sees(f)).collect();
    // A forum this user may not see is not in `forums`: none is selected.
    let selected_id =
        query.forum.and_then(|f| f.parse::<i32>().ok()).filter(|id| forums.iter().any(|f| f.id == *id));
    let (selected, posts) = match selected_id {
        Some(id) => match app.repo.posts(id).await {
            Ok(posts) => (forums.iter().find(|f| f.id == id).cloned(), posts),
            Err(repository::Error::NotFound(..)) => (None, Vec::new()),
            Err(e) => return Err(e.into()),
        },
        None => (None, Vec::new()),
    };
    render(Index { forums, selected, posts, user: name, users: USERS, cursor })
}

fn render(page: Index) -> Result<Html<String>, ApiError> {
    page.render().map(Html).map_err(|e| {
        tracing::error!(error = %e, "template error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "template", "could not render the page")
    })
}
