//! Every read and write of the application, and the notifications the writes
//! cause.
//!
//! Each write runs in a [`Transaction`] whose batch is a child of the
//! request's [`Batch`]. With the outbox (the example's default) the
//! notifications queued here are written to the outbox in the same
//! transaction, and go out once it commits; with the in-memory backplane
//! they join the request's batch only if the commit succeeds, and the
//! request layer sends them only if the response is a success. Handlers
//! never notify by hand.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde::Serialize;
use tidings::sea_orm::Transaction;
use tidings::{Batch, Notify, Op};
use time::format_description::well_known::Rfc3339;

use super::entity::{forum, post};

/// The collection names clients see in notifications.
pub const FORUMS: &str = "forums";
pub const POSTS: &str = "posts";

/// Why a repository call failed.
#[derive(Debug)]
pub enum Error {
    /// The row does not exist (`"forum"` or `"post"`, and its id).
    NotFound(&'static str, i32),
    /// The database failed.
    Db(DbErr),
}

impl From<DbErr> for Error {
    fn from(e: DbErr) -> Self {
        Error::Db(e)
    }
}

/// The data of a `forums` notification.
#[derive(Serialize)]
struct ForumRef {
    id: i32,
}

/// The data of a `posts` notification: which post, in which forum.
#[derive(Serialize)]
struct PostRef {
    id: i32,
    forum_id: i32,
}

/// Queues a notification on the transaction. The data are two integers at
/// most, whose serialization cannot fail.
fn queue(txn: &Transaction, collection: &'static str, op: Op, data: &impl Serialize) {
    txn.notify_with(collection, op, data).expect("notification data is plain integers");
}

/// Reads and writes forums and posts.
#[derive(Clone, Debug)]
pub struct Repository {
    db: DatabaseConnection,
}

impl Repository {
    pub fn new(db: DatabaseConnection) -> Self {
        Repository { db }
    }

    // ---- forums ----------------------------------------------------------

    pub async fn forums(&self) -> Result<Vec<forum::Model>, Error> {
        Ok(forum::Entity::find().order_by_asc(forum::Column::Id).all(&self.db).await?)
    }

    pub async fn forum(&self, id: i32) -> Result<forum::Model, Error> {
        forum::Entity::find_by_id(id).one(&self.db).await?.ok_or(Error::NotFound("forum", id))
    }

    pub async fn create_forum(&self, batch: &Batch, title: String) -> Result<forum::Model, Error> {
        let txn = Transaction::begin(&self.db, batch.child()).await?;
        let forum =
            forum::ActiveModel { title: Set(title), created_at: Set(Some(now())), ..Default::default() }
                .insert(&txn)
                .await?;
        queue(&txn, FORUMS, Op::Insert, &ForumRef { id: forum.id });
        txn.commit().await?;
        Ok(forum)
    }

    pub async fn rename_forum(&self, batch: &Batch, id: i32, title: String) -> Result<forum::Model, Error> {
        let txn = Transaction::begin(&self.db, batch.child()).await?;
        let mut forum: forum::ActiveModel =
            forum::Entity::find_by_id(id).one(&txn).await?.ok_or(Error::NotFound("forum", id))?.into();
        forum.title = Set(title);
        let forum = forum.update(&txn).await?;
        queue(&txn, FORUMS, Op::Update, &ForumRef { id });
        txn.commit().await?;
        Ok(forum)
    }

    /// Deletes the forum and its posts in one transaction: one `posts` delete
    /// per post, then the `forums` delete, all sent after the commit.
    pub async fn delete_forum(&self, batch: &Batch, id: i32) -> Result<(), Error> {
        let txn = Transaction::begin(&self.db, batch.child()).await?;
        forum::Entity::find_by_id(id).one(&txn).await?.ok_or(Error::NotFound("forum", id))?;
        let posts = post::Entity::find()
            .filter(post::Column::ForumId.eq(id))
            .order_by_asc(post::Column::Id)
            .all(&txn)
            .await?;
        post::Entity::delete_many().filter(post::Column::ForumId.eq(id)).exec(&txn).await?;
        for post in &posts {
            queue(&txn, POSTS, Op::Delete, &PostRef { id: post.id, forum_id: id });
        }
        forum::Entity::delete_by_id(id).exec(&txn).await?;
        queue(&txn, FORUMS, Op::Delete, &ForumRef { id });
        txn.commit().await?;
        Ok(())
    }

    // ---- posts -----------------------------------------------------------

    /// The forum's posts, oldest first; `NotFound` if the forum does not exist.
    pub async fn post(&self, id: i32) -> Result<post::Model, Error> {
        post::Entity::find_by_id(id).one(&self.db).await?.ok_or(Error::NotFound("post", id))
    }

    pub async fn posts(&self, forum_id: i32) -> Result<Vec<post::Model>, Error> {
        self.forum(forum_id).await?;
        Ok(post::Entity::find()
            .filter(post::Column::ForumId.eq(forum_id))
            .order_by_asc(post::Column::Id)
            .all(&self.db)
            .await?)
    }

    pub async fn create_post(
        &self,
        batch: &Batch,
        forum_id: i32,
        body: String,
    ) -> Result<post::Model, Error> {
        let txn = Transaction::begin(&self.db, batch.child()).await?;
        // Checked inside the transaction: on `NotFound` the transaction is
        // dropped (rolled back) together with its batch, and nothing is sent.
        forum::Entity::find_by_id(forum_id).one(&txn).await?.ok_or(Error::NotFound("forum", forum_id))?;
        let post = post::ActiveModel {
            forum_id: Set(forum_id),
            body: Set(body),
            created_at: Set(Some(now())),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        queue(&txn, POSTS, Op::Insert, &PostRef { id: post.id, forum_id });
        txn.commit().await?;
        Ok(post)
    }

    pub async fn edit_post(&self, batch: &Batch, id: i32, body: String) -> Result<post::Model, Error> {
        let txn = Transaction::begin(&self.db, batch.child()).await?;
        let mut post: post::ActiveModel =
            post::Entity::find_by_id(id).one(&txn).await?.ok_or(Error::NotFound("post", id))?.into();
        post.body = Set(body);
        let post = post.update(&txn).await?;
        queue(&txn, POSTS, Op::Update, &PostRef { id, forum_id: post.forum_id });
        txn.commit().await?;
        Ok(post)
    }

    pub async fn delete_post(&self, batch: &Batch, id: i32) -> Result<(), Error> {
        let txn = Transaction::begin(&self.db, batch.child()).await?;
        let post = post::Entity::find_by_id(id).one(&txn).await?.ok_or(Error::NotFound("post", id))?;
        post::Entity::delete_by_id(id).exec(&txn).await?;
        queue(&txn, POSTS, Op::Delete, &PostRef { id, forum_id: post.forum_id });
        txn.commit().await?;
        Ok(())
    }
}

/// The current time as RFC 3339 in UTC, to the second (`2025-01-31T09:05:00Z`).
fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    // Whole seconds: RFC 3339 then has no fraction. (Formatting a UTC time
    // as RFC 3339 cannot fail for years 0 to 9999.)
    now.replace_nanosecond(0).unwrap_or(now).format(&Rfc3339).unwrap_or_default()
}
