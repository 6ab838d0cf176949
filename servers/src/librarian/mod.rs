//! The librarian: an HTTP blob service over `blobstore`.

pub mod http;
