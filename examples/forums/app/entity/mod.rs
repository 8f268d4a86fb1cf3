//! The two tables: a forum has many posts.

pub mod forum;
pub mod post;
