pub mod app;
pub mod cluster;
pub mod db;
pub mod process;
pub mod receiver;

pub use app::TestApp;
pub use db::TestDb;
pub use receiver::{Receiver, Reply};
