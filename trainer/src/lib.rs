pub mod download;
pub mod placeholder {}
