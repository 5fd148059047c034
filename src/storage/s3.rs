//! S3 through the `object_store` crate: one client per bucket, built on first use from
//! [`StorageConfig`] (the AWS_* environment or the flags), path-style whenever an endpoint is
//! set; retries with exponential backoff on 5xx, timeouts and throttling are the crate's
//! (`RetryConfig`). TLS is rustls with ring (installed once as the process's provider), so
//! aws-lc-rs stays out of the build.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as KeyPath;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, MultipartUpload, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};
use tokio::io::AsyncReadExt;

use super::{Failure, ObjectMeta, ObjectUrl, Sink, StorageConfig, StoreError};
use crate::media::arriving::MapWriter;

/// Files up to this size go up in one PUT; larger ones (a source for `submit --upload`) as a
/// multipart upload of parts this big (S3's minimum part is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// The end of a source fetched first when a job reads it as it arrives: where an MP4 written
/// without `faststart` keeps its index (~1 MiB for an hour of 25p video with stereo AAC; the
/// rest of a larger index is fetched by range as the job waits for it, see
/// [`S3Stores::serve_reads_ahead`]). It shares the link with the sequential download, so it is
/// kept small: 8 MiB cost 0.7 s at 100 Mbit/s before the first frame.
const TAIL_BYTES: u64 = 4 << 20;
/// A chunk the job waits for this many chunks (MiB) or more past the sequential download is
/// fetched by a ranged GET; nearer, the download brings it first.
const READ_AHEAD_CHUNKS: u64 = 8;
/// At most this many chunks per ranged GET for the job's reads ahead.
const RANGE_CHUNKS: u64 = 4;
/// How often the worker looks at what the job waits for.
const WANTED_POLL: Duration = Duration::from_millis(10);

/// The bytes [`S3Stores::fetch_tail`] fetches: the last [`TAIL_BYTES`], for a larger source.
fn tail_range(map: &MapWriter) -> Option<Range<u64>> {
    let size = map.arriving().size;
    (size > TAIL_BYTES).then(|| size - TAIL_BYTES..size)
}

pub(crate) struct S3Stores {
    args: StorageConfig,
    /// Per bucket and [`Timeout`].
    clients: Mutex<HashMap<(String, Timeout), Arc<AmazonS3>>>,
}

/// How `--s3-timeout` bounds a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Timeout {
    /// The whole request, body included: every request but a source's GET.
    Whole,
    /// Each read of the response: a source's GET, whose body may take far longer than any
    /// fixed bound (20 GB at 50 MB/s is 400 s) and must only keep moving.
    EachRead,
}

/// The store's error, classified. The message names the key, never a credential.
fn classify(url: &ObjectUrl, e: object_store::Error) -> StoreError {
    use object_store::Error as E;
    let failure = match &e {
        E::NotFound { .. } => Failure::NotFound,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Failure::Denied,
        E::InvalidPath { .. } | E::NotSupported { .. } | E::UnknownConfigurationKey { .. } => {
            Failure::Invalid
        }
        // After the client's own retries: a 5xx, a timeout, a connection error, throttling.
        _ => Failure::Transient,
    };
    StoreError::new(failure, format!("{url}: {e}"))
}

fn key(url: &ObjectUrl) -> std::result::Result<KeyPath, StoreError> {
    KeyPath::parse(&url.key)
        .map_err(|e| StoreError::new(Failure::Invalid, format!("{url}: invalid key: {e}")))
}

impl S3Stores {
    pub(crate) fn new(args: &StorageConfig) -> S3Stores {
        S3Stores {
            args: args.clone(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn client(&self, bucket: &str) -> std::result::Result<Arc<AmazonS3>, StoreError> {
        self.client_with(bucket, Timeout::Whole)
    }

    fn client_with(
        &self,
        bucket: &str,
        timeout: Timeout,
    ) -> std::result::Result<Arc<AmazonS3>, StoreError> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| StoreError::new(Failure::Transient, "S3 client cache poisoned"))?;
        if let Some(c) = clients.get(&(bucket.to_string(), timeout)) {
            return Ok(Arc::clone(c));
        }
        // reqwest is built without a default TLS provider: ring, as for NATS and callbacks.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let a = &self.args;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: a.s3_retries,
            retry_timeout: Duration::from_secs(180),
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&a.s3_region)
            .with_retry(retry)
            .with_client_options({
                let limit = Duration::from_secs_f64(a.s3_timeout.clamp(1.0, 3600.0));
                let options = ClientOptions::new()
                    .with_allow_http(a.s3_allow_http)
                    .with_connect_timeout(Duration::from_secs(10));
                match timeout {
                    Timeout::Whole => options.with_timeout(limit),
                    Timeout::EachRead => options.with_timeout_disabled().with_read_timeout(limit),
                }
            });
        if let Some(endpoint) = &a.s3_endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &a.s3_access_key_id {
            b = b.with_access_key_id(&k.0);
        }
        if let Some(s) = &a.s3_secret_access_key {
            b = b.with_secret_access_key(&s.0);
        }
        if let Some(t) = &a.s3_session_token {
            b = b.with_token(&t.0);
        }
        // The builder's errors name keys and URLs, not values of secrets.
        let client = Arc::new(b.build().map_err(|e| {
            StoreError::new(
                Failure::Invalid,
                format!("S3 configuration for bucket {bucket}: {e}"),
            )
        })?);
        clients.insert((bucket.to_string(), timeout), Arc::clone(&client));
        Ok(client)
    }

    pub(crate) async fn head(
        &self,
        url: &ObjectUrl,
    ) -> std::result::Result<ObjectMeta, StoreError> {
        let meta = self
            .client(&url.bucket)?
            .head(&key(url)?)
            .await
            .map_err(|e| classify(url, e))?;
        Ok(ObjectMeta {
            size: meta.size,
            version: meta.e_tag.or(meta.version).unwrap_or_default(),
        })
    }

    pub(crate) async fn download(
        &self,
        url: &ObjectUrl,
        dest: &Path,
        max_bytes: u64,
        counter: &AtomicU64,
        arrival: Option<&MapWriter>,
    ) -> std::result::Result<u64, StoreError> {
        let got = self
            .client_with(&url.bucket, Timeout::EachRead)?
            .get(&key(url)?)
            .await
            .map_err(|e| classify(url, e))?;
        let announced = got.meta.size;
        if announced > max_bytes {
            return Err(StoreError::new(
                Failure::Invalid,
                format!("{url} is {announced} bytes; at most {max_bytes} are accepted (--max-source-bytes)"),
            ));
        }
        // A plain ETag is the MD5 of the content; a multipart one (`…-N`) is not checkable
        // without the part sizes, and then the size is what is checked.
        let etag_md5 = got
            .meta
            .e_tag
            .as_deref()
            .map(|t| t.trim_matches('"').to_ascii_lowercase())
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()));
        let mut sink = Sink::open(dest, arrival).await?;
        let mut md5 = Md5::new();
        let mut total = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(url, e))?;
            total += chunk.len() as u64;
            if total > max_bytes {
                return Err(StoreError::new(
                    Failure::Invalid,
                    format!("{url} is larger than --max-source-bytes ({max_bytes})"),
                ));
            }
            md5.update(&chunk);
            sink.write(&chunk).await?;
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        sink.finish().await?;
        if total != announced {
            return Err(StoreError::new(
                Failure::Corrupt,
                format!("{url}: {total} bytes read, {announced} announced"),
            ));
        }
        if let Some(expected) = etag_md5 {
            let got: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if got != expected {
                return Err(StoreError::new(
                    Failure::Corrupt,
                    format!("{url}: content MD5 {got} differs from its ETag {expected}"),
                ));
            }
        }
        Ok(total)
    }

    /// The last [`TAIL_BYTES`] of `url` by one ranged GET, written in place into `dest` (a
    /// file at the object's full size) and marked in `map`. Nothing for an object no larger:
    /// the sequential download is then the same request.
    pub(crate) async fn fetch_tail(
        &self,
        url: &ObjectUrl,
        dest: &Path,
        map: &MapWriter,
    ) -> std::result::Result<(), StoreError> {
        match tail_range(map) {
            Some(range) => self.fetch_range(url, dest, map, range).await,
            None => Ok(()),
        }
    }

    /// Serves the job's reads far ahead of the sequential download by ranged GETs, one at a
    /// time, until dropped: an MP4 index larger than the tail fetched first, or a demuxer
    /// that jumps between tracks stored apart. Not the chunks of the tail
    /// ([`S3Stores::fetch_tail`] brings them). Returns only on an error.
    pub(crate) async fn serve_reads_ahead(
        &self,
        url: &ObjectUrl,
        dest: &Path,
        map: &MapWriter,
    ) -> StoreError {
        let arriving = map.arriving();
        let below = match tail_range(map) {
            Some(tail) => tail.start.div_ceil(arriving.chunk_bytes.max(1)),
            None => u64::MAX,
        };
        loop {
            let wanted = match map.wanted_ahead(READ_AHEAD_CHUNKS, RANGE_CHUNKS, below) {
                Ok(w) => w,
                Err(e) => return StoreError::new(Failure::Transient, format!("arrival map: {e}")),
            };
            match wanted {
                Some(range) => {
                    tracing::info!(
                        start = range.start,
                        end = range.end,
                        "source bytes fetched by range ahead of the download: the job waits for them"
                    );
                    if let Err(e) = self.fetch_range(url, dest, map, range).await {
                        return e;
                    }
                }
                None => tokio::time::sleep(WANTED_POLL).await,
            }
        }
    }

    /// `range` of `url` by one ranged GET, written in place into `dest` and marked in `map`.
    async fn fetch_range(
        &self,
        url: &ObjectUrl,
        dest: &Path,
        map: &MapWriter,
        range: Range<u64>,
    ) -> std::result::Result<(), StoreError> {
        let bytes = self
            .client_with(&url.bucket, Timeout::EachRead)?
            .get_range(&key(url)?, range.clone())
            .await
            .map_err(|e| classify(url, e))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(StoreError::new(
                Failure::Corrupt,
                format!(
                    "{url}: the ranged GET of bytes {}..{} gave {}",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            ));
        }
        let path = dest.to_path_buf();
        let start = range.start;
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.write_all_at(&bytes, start))
        })
        .await
        .map_err(|e| StoreError::new(Failure::Transient, format!("scratch write: {e}")))?
        .map_err(|e| {
            StoreError::new(
                Failure::Transient,
                format!("scratch {}: {e}", dest.display()),
            )
        })?;
        map.mark(range.start, range.end)
            .map_err(|e| StoreError::new(Failure::Transient, format!("arrival map: {e}")))
    }

    pub(crate) async fn put_file(
        &self,
        url: &ObjectUrl,
        path: &Path,
        content_type: &'static str,
        counter: &AtomicU64,
    ) -> std::result::Result<u64, StoreError> {
        let client = self.client(&url.bucket)?;
        let location = key(url)?;
        let local = |e: std::io::Error| {
            StoreError::new(
                Failure::Transient,
                format!("reading {}: {e}", path.display()),
            )
        };
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.into());
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        let size = file.metadata().await.map_err(local)?.len();
        if size <= PART_BYTES as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).await.map_err(local)?;
            let n = data.len() as u64;
            let opts = PutOptions {
                attributes,
                ..Default::default()
            };
            client
                .put_opts(&location, PutPayload::from(Bytes::from(data)), opts)
                .await
                .map_err(|e| classify(url, e))?;
            counter.fetch_add(n, Ordering::Relaxed);
            return Ok(n);
        }
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let mut upload = client
            .put_multipart_opts(&location, opts)
            .await
            .map_err(|e| classify(url, e))?;
        let mut total = 0u64;
        let result: std::result::Result<(), StoreError> = async {
            loop {
                let mut part = Vec::with_capacity(PART_BYTES);
                (&mut file)
                    .take(PART_BYTES as u64)
                    .read_to_end(&mut part)
                    .await
                    .map_err(local)?;
                if part.is_empty() {
                    break;
                }
                let n = part.len() as u64;
                // One part in flight: memory stays at one part whatever the file's size.
                upload
                    .put_part(PutPayload::from(Bytes::from(part)))
                    .await
                    .map_err(|e| classify(url, e))?;
                total += n;
                counter.fetch_add(n, Ordering::Relaxed);
            }
            upload.complete().await.map_err(|e| classify(url, e))?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // No orphan parts: a failed multipart upload is aborted.
            let _ = upload.abort().await;
            return Err(e);
        }
        Ok(total)
    }

    pub(crate) async fn get_small(
        &self,
        url: &ObjectUrl,
        max: u64,
    ) -> std::result::Result<Option<Bytes>, StoreError> {
        let got = match self.client(&url.bucket)?.get(&key(url)?).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(classify(url, e)),
        };
        if got.meta.size > max {
            return Err(StoreError::new(
                Failure::Invalid,
                format!(
                    "{url} is {} bytes, more than the {max} expected",
                    got.meta.size
                ),
            ));
        }
        got.bytes().await.map(Some).map_err(|e| classify(url, e))
    }

    pub(crate) async fn delete(&self, url: &ObjectUrl) -> std::result::Result<(), StoreError> {
        self.client(&url.bucket)?
            .delete(&key(url)?)
            .await
            .map_err(|e| classify(url, e))
    }
}
