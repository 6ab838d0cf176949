//! S3-compatible endpoints through OpenDAL (request signing, multipart uploads, listings), on
//! a small tokio runtime owned by the client. Bucket creation, which OpenDAL does not offer,
//! is one request signed by `reqsign` (the signer OpenDAL itself uses).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use opendal::services::S3;
use opendal::{ErrorKind, Operator};
use tokio::runtime::Runtime;

use crate::client::{status_attempt, Attempt, AttemptResult, Listed, ObjectClient, Retry};
use crate::config::{ObjectStoreConfig, Protocol, S3_MAX_PART_IN_MEMORY};
use crate::error::Error;

/// An S3 account; one OpenDAL operator per bucket.
pub(crate) struct S3Client {
    runtime: Arc<Runtime>,
    endpoint: String,
    region: String,
    access_key: String,
    secret_key: String,
    virtual_host_style: bool,
    operators: Mutex<HashMap<String, Operator>>,
    http: reqwest::blocking::Client,
    retry: Retry,
    timeout: Duration,
    part_size: u64,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn attempt(error: opendal::Error, operation: &'static str, bucket: &str, key: &str) -> Attempt {
    if error.is_temporary() {
        return Attempt::Transient(error.to_string());
    }
    match error.kind() {
        // OpenDAL reports a refused or reset connection as Unexpected (temporary when it
        // knows); a closed proxy shows up here, so treat it as transient too.
        ErrorKind::Unexpected => Attempt::Transient(error.to_string()),
        ErrorKind::PermissionDenied => Attempt::Permanent(Error::Auth {
            url: format!("{bucket}/{key}"),
            detail: error.to_string(),
        }),
        ErrorKind::RateLimited => Attempt::Transient(error.to_string()),
        _ => Attempt::Permanent(Error::Refused {
            operation,
            container: bucket.to_string(),
            key: key.to_string(),
            status: 0,
            body: error.to_string(),
        }),
    }
}

/// A blocking `Read` over OpenDAL's byte stream.
struct StreamRead {
    runtime: Arc<Runtime>,
    stream: opendal::FuturesBytesStream,
    current: Bytes,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl S3Client {
    /// The client of `config`, whose protocol must be S3.
    pub(crate) fn new(config: &ObjectStoreConfig, retry: Retry) -> Result<Self, Error> {
        let Protocol::S3 {
            endpoint,
            region,
            access_key,
            secret_key,
            virtual_host_style,
        } = &config.protocol
        else {
            return Err(Error::Config("not an S3 configuration".into()));
        };
        let virtual_host_style = *virtual_host_style;
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let segment_size = config.segment_size;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("objectstore-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the S3 runtime", "", e))?;
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(S3Client {
            runtime: Arc::new(runtime),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            virtual_host_style,
            operators: Mutex::new(HashMap::new()),
            http,
            retry,
            timeout,
            part_size: segment_size.clamp(5 << 20, S3_MAX_PART_IN_MEMORY),
        })
    }

    fn operator(&self, bucket: &str) -> Result<Operator, Error> {
        let mut operators = self.operators.lock().expect("operators lock");
        if let Some(op) = operators.get(bucket) {
            return Ok(op.clone());
        }
        let mut builder = S3::default()
            .endpoint(&self.endpoint)
            .region(&self.region)
            .bucket(bucket)
            .access_key_id(&self.access_key)
            .secret_access_key(&self.secret_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if self.virtual_host_style {
            builder = builder.enable_virtual_host_style();
        }
        let op = Operator::new(builder)
            .map_err(|e| Error::Config(format!("S3 bucket {bucket}: {e}")))?
            .finish();
        operators.insert(bucket.to_string(), op.clone());
        Ok(op)
    }

    fn run<T>(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
        attempt: impl FnMut() -> AttemptResult<T>,
    ) -> Result<T, Error> {
        self.retry.run(operation, bucket, key, attempt, &|| {})
    }

    fn bucket_url(&self, bucket: &str) -> String {
        if self.virtual_host_style {
            match self.endpoint.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{bucket}.{host}/"),
                None => format!("{bucket}.{}/", self.endpoint),
            }
        } else {
            format!("{}/{bucket}", self.endpoint)
        }
    }
}

impl ObjectClient for S3Client {
    fn ensure_container(&self, bucket: &str) -> Result<(), Error> {
        let signer = reqsign::AwsV4Signer::new("s3", &self.region);
        let credential = reqsign::AwsCredential {
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            session_token: None,
            expires_in: None,
        };
        self.run("create bucket", bucket, "", || {
            let mut request = self
                .http
                .put(self.bucket_url(bucket))
                .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
                .build()
                .map_err(|e| Attempt::Permanent(Error::Config(e.to_string())))?;
            signer.sign(&mut request, &credential).map_err(|e| {
                Attempt::Permanent(Error::Auth {
                    url: self.endpoint.clone(),
                    detail: e.to_string(),
                })
            })?;
            let response = self
                .http
                .execute(request)
                .map_err(|e| Attempt::Transient(e.to_string()))?;
            let status = response.status().as_u16();
            let mut body = String::new();
            let _ = response.take(1024).read_to_string(&mut body);
            match status {
                200 | 204 => Ok(()),
                409 if body.contains("BucketAlreadyOwnedByYou") => Ok(()),
                _ => Err(status_attempt(status, body, "create bucket", bucket, "")),
            }
        })
    }

    fn put(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        size: u64,
        segmented: bool,
    ) -> Result<(), Error> {
        let op = self.operator(bucket)?;
        // OpenDAL holds a part in memory: anything larger than a part goes multipart.
        let chunk = if segmented {
            self.part_size
        } else {
            self.part_size.max(1)
        };
        self.run("put", bucket, key, || {
            let mut file =
                File::open(path).map_err(|e| Attempt::Permanent(Error::io("opening", path, e)))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Attempt::Permanent(Error::io("seeking in", path, e)))?;
            self.runtime.block_on(async {
                let chunk_len = usize::try_from(chunk).unwrap_or(usize::MAX);
                let mut writer = op
                    .writer_with(key)
                    .chunk(chunk_len)
                    .concurrent(1)
                    .await
                    .map_err(|e| attempt(e, "put", bucket, key))?;
                let mut remaining = size;
                while remaining > 0 {
                    let n = usize::try_from(remaining.min(8 << 20)).unwrap_or(8 << 20);
                    let mut buf = vec![0u8; n];
                    // A blocking read of the local spool file inside the runtime: short, and
                    // this runtime is ours alone (no other task waits on this thread).
                    file.read_exact(&mut buf)
                        .map_err(|e| Attempt::Permanent(Error::io("reading", path, e)))?;
                    if let Err(e) = writer.write(buf).await {
                        let _ = writer.abort().await;
                        return Err(attempt(e, "put", bucket, key));
                    }
                    remaining -= n as u64;
                }
                writer
                    .close()
                    .await
                    .map(|_| ())
                    .map_err(|e| attempt(e, "put", bucket, key))
            })
        })
    }

    fn head(&self, bucket: &str, key: &str) -> Result<Option<u64>, Error> {
        let op = self.operator(bucket)?;
        self.run("head", bucket, key, || {
            match self
                .runtime
                .block_on(async { tokio::time::timeout(self.timeout, op.stat(key)).await })
            {
                Err(_) => Err(Attempt::Transient("timed out".into())),
                Ok(Ok(meta)) => Ok(Some(meta.content_length())),
                Ok(Err(e)) if e.kind() == ErrorKind::NotFound => Ok(None),
                Ok(Err(e)) => Err(attempt(e, "head", bucket, key)),
            }
        })
    }

    fn get(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send>>, Error> {
        if len == 0 {
            return Ok(self
                .head(bucket, key)?
                .map(|_| Box::new(io::empty()) as Box<dyn Read + Send>));
        }
        let op = self.operator(bucket)?;
        self.run("get", bucket, key, || {
            self.runtime.block_on(async {
                let reader = op
                    .reader_with(key)
                    .chunk(8 << 20)
                    .await
                    .map_err(|e| attempt(e, "get", bucket, key))?;
                let stream = match offset.checked_add(len) {
                    Some(end) if len != u64::MAX => reader.into_bytes_stream(offset..end).await,
                    _ => reader.into_bytes_stream(offset..).await,
                };
                let mut stream = match stream {
                    Ok(stream) => stream,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(attempt(e, "get", bucket, key)),
                };
                // The first chunk now, so that a missing object is `None` rather than an
                // error on the first read.
                let current = match stream.next().await {
                    None => Bytes::new(),
                    Some(Ok(bytes)) => bytes,
                    Some(Err(e)) => {
                        let kind = e.kind();
                        let text = e.to_string();
                        if kind == io::ErrorKind::NotFound || text.contains("NotFound") {
                            return Ok(None);
                        }
                        return Err(Attempt::Transient(text));
                    }
                };
                Ok(Some(Box::new(StreamRead {
                    runtime: self.runtime.clone(),
                    stream,
                    current,
                }) as Box<dyn Read + Send>))
            })
        })
    }

    fn delete(&self, bucket: &str, key: &str, _segmented: bool) -> Result<(), Error> {
        let op = self.operator(bucket)?;
        self.run("delete", bucket, key, || {
            match self.runtime.block_on(op.delete(key)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(attempt(e, "delete", bucket, key)),
            }
        })
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        visit: &mut dyn FnMut(Listed) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let op = self.operator(bucket)?;
        let entries = self.run("list", bucket, prefix, || {
            match self
                .runtime
                .block_on(async { op.list_with(prefix).recursive(true).await })
            {
                Ok(entries) => Ok(entries),
                // A bucket not created yet lists nothing, as a missing Swift container does.
                Err(e)
                    if e.kind() == ErrorKind::NotFound
                        || e.to_string().contains("NoSuchBucket") =>
                {
                    Ok(Vec::new())
                }
                Err(e) => Err(attempt(e, "list", bucket, prefix)),
            }
        })?;
        for entry in entries {
            if entry.metadata().is_dir() {
                continue;
            }
            let modified = entry
                .metadata()
                .last_modified()
                .map_or(i64::MAX, |t| t.timestamp_millis());
            visit(Listed {
                name: entry.path().to_string(),
                modified,
            })?;
        }
        Ok(())
    }

    fn segments_container(&self, _bucket: &str) -> Option<String> {
        None
    }

    fn delete_segment(&self, bucket: &str, name: &str) -> Result<(), Error> {
        self.delete(bucket, name, false)
    }
}
