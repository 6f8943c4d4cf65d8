pub mod app;
pub mod db;
pub mod receiver;

pub use app::TestApp;
pub use db::TestDb;
pub use receiver::{Receiver, Reply};
