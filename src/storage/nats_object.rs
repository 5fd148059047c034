//! The JetStream object store (ADR-20) through async-nats' `object-store` feature, on the
//! worker's own connection. A bucket is the stream `OBJ_<bucket>`; it is created only with
//! `--create-buckets`. Reads are streamed (one chunk at a time) and their SHA-256 compared
//! with the object's digest; a mismatch is retried once before it counts as corrupt.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context;
use async_nats::jetstream::object_store::{self, ObjectInfo, ObjectOptions, ObjectStore};
use async_nats::jetstream::Context;
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{Failure, ObjectMeta, ObjectUrl, Sink, StoreError};
use crate::media::arriving::MapWriter;

/// Tries of one read or write that failed transiently (or with a digest mismatch).
const ATTEMPTS: u32 = 3;
/// Chunk size of stored objects: the JetStream object store's default (128 KiB), well under
/// any server's max_payload.
const CHUNK_BYTES: usize = 128 * 1024;

pub(crate) struct Nats<'a> {
    pub(crate) js: &'a Context,
    pub(crate) create_buckets: bool,
}

/// A transient failure, by the text of async-nats' error kinds (timed out, publish failed…):
/// anything that is not "not found" or "invalid".
/// What async-nats says of a failed object store call, where its error has a kind that
/// decides it (a message can change between releases; a kind is part of the API); `None`
/// leaves the decision to the message.
trait Kinded: std::fmt::Display {
    fn failure(&self) -> Option<Failure> {
        None
    }
}

impl Kinded for object_store::InfoError {
    fn failure(&self) -> Option<Failure> {
        use object_store::InfoErrorKind as K;
        match self.kind() {
            K::NotFound => Some(Failure::NotFound),
            K::InvalidName => Some(Failure::Invalid),
            K::TimedOut => Some(Failure::Transient),
            K::Other => None,
        }
    }
}

impl Kinded for object_store::GetError {
    fn failure(&self) -> Option<Failure> {
        use object_store::GetErrorKind as K;
        match self.kind() {
            K::NotFound => Some(Failure::NotFound),
            K::InvalidName => Some(Failure::Invalid),
            K::TimedOut | K::ConsumerCreate => Some(Failure::Transient),
            K::BucketLink | K::Other => None,
        }
    }
}

impl Kinded for object_store::DeleteError {
    fn failure(&self) -> Option<Failure> {
        use object_store::DeleteErrorKind as K;
        match self.kind() {
            K::NotFound => Some(Failure::NotFound),
            K::InvalidName => Some(Failure::Invalid),
            K::TimedOut => Some(Failure::Transient),
            K::Metadata | K::Chunks | K::Other => None,
        }
    }
}

/// Errors without a kind that decides (reads, publishes, bucket lookups): the message.
impl Kinded for std::io::Error {}
impl Kinded for String {}
impl Kinded for context::PublishError {}
impl Kinded for async_nats::error::Error<context::CreateKeyValueErrorKind> {
    fn failure(&self) -> Option<Failure> {
        use context::CreateKeyValueErrorKind as K;
        match self.kind() {
            K::InvalidStoreName => Some(Failure::Invalid),
            K::TimedOut => Some(Failure::Transient),
            _ => None,
        }
    }
}

impl Kinded for context::GetStreamError {
    fn failure(&self) -> Option<Failure> {
        use context::GetStreamErrorKind as K;
        match self.kind() {
            K::EmptyName | K::InvalidStreamName => Some(Failure::Invalid),
            K::Request => Some(Failure::Transient),
            // The server's own error: "stream not found" and the like, by its message.
            K::JetStream(_) => None,
        }
    }
}

fn classify(url: &ObjectUrl, what: &str, e: impl Kinded) -> StoreError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let failure = if let Some(failure) = e.failure() {
        failure
    } else if lower.contains("not found") {
        Failure::NotFound
    } else if lower.contains("invalid") {
        Failure::Invalid
    } else if lower.contains("permission") || lower.contains("authorization") {
        Failure::Denied
    } else if lower.contains("digest") {
        Failure::Corrupt
    } else {
        Failure::Transient
    };
    StoreError::new(failure, format!("{url}: {what}: {text}"))
}

/// Runs `op` up to [`ATTEMPTS`] times while it fails transiently (or, for reads, with a
/// digest mismatch), with a doubling pause.
async fn retried<T, F, Fut>(mut op: F) -> std::result::Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, StoreError>>,
{
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e)
                if attempt < ATTEMPTS
                    && matches!(e.failure, Failure::Transient | Failure::Corrupt) =>
            {
                tracing::warn!(error = %e.message, attempt, "object store operation failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl Nats<'_> {
    /// The bucket; a missing one is created only for an output with `--create-buckets`.
    pub(crate) async fn bucket(
        &self,
        name: &str,
        for_output: bool,
    ) -> std::result::Result<ObjectStore, StoreError> {
        let url = ObjectUrl {
            scheme: super::Scheme::NatsObject,
            bucket: name.into(),
            key: String::new(),
        };
        match self.js.get_object_store(name).await {
            Ok(b) => Ok(b),
            Err(e) => {
                let e = classify(
                    &url,
                    "bucket",
                    format!("{e}: {:?}", std::error::Error::source(&e)),
                );
                if e.failure != Failure::NotFound || !(for_output && self.create_buckets) {
                    return Err(e);
                }
                tracing::info!(
                    bucket = name,
                    "creating the object store bucket (--create-buckets)"
                );
                self.js
                    .create_object_store(async_nats::jetstream::object_store::Config {
                        bucket: name.into(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| classify(&url, "creating the bucket", e))
            }
        }
    }

    pub(crate) async fn head(
        &self,
        url: &ObjectUrl,
    ) -> std::result::Result<ObjectMeta, StoreError> {
        let bucket = &self.bucket(&url.bucket, false).await?;
        let info = retried(move || async move {
            bucket
                .info(&url.key)
                .await
                .map_err(|e| classify(url, "info", e))
        })
        .await?;
        Ok(ObjectMeta {
            size: info.size as u64,
            version: format!("{}:{}", info.nuid, info.digest.unwrap_or_default()),
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
        let bucket = &self.bucket(&url.bucket, false).await?;
        retried(move || self.download_once(bucket, url, dest, max_bytes, counter, arrival)).await
    }

    async fn download_once(
        &self,
        bucket: &ObjectStore,
        url: &ObjectUrl,
        dest: &Path,
        max_bytes: u64,
        counter: &AtomicU64,
        arrival: Option<&MapWriter>,
    ) -> std::result::Result<u64, StoreError> {
        let mut object = bucket
            .get(&url.key)
            .await
            .map_err(|e| classify(url, "get", e))?;
        let info = object.info().clone();
        if info.size as u64 > max_bytes {
            return Err(StoreError::new(
                Failure::Invalid,
                format!(
                    "{url} is {} bytes; at most {max_bytes} are accepted (--max-source-bytes)",
                    info.size
                ),
            ));
        }
        let mut sink = Sink::open(dest, arrival).await?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = object
                .read(&mut buf)
                .await
                .map_err(|e| classify(url, "reading", e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > max_bytes {
                return Err(StoreError::new(
                    Failure::Invalid,
                    format!("{url} is larger than --max-source-bytes ({max_bytes})"),
                ));
            }
            sha.update(&buf[..n]);
            sink.write(&buf[..n]).await?;
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        sink.finish().await?;
        if total != info.size as u64 {
            return Err(StoreError::new(
                Failure::Corrupt,
                format!("{url}: {total} bytes read, {} announced", info.size),
            ));
        }
        if let Some(expected) = &info.digest {
            let got = format!(
                "SHA-256={}",
                base64::engine::general_purpose::URL_SAFE.encode(sha.finalize())
            );
            if &got != expected {
                return Err(StoreError::new(
                    Failure::Corrupt,
                    format!("{url}: content digest {got} differs from the object's {expected}"),
                ));
            }
        }
        Ok(total)
    }

    /// Stores the file at `path` as `url`. Written here rather than with async-nats' `put`:
    /// that one publishes the chunks under a fresh nuid, then the metadata, and a failure in
    /// between leaves the chunks in the stream with nothing pointing at them. Same wire format
    /// (ADR-20: chunks on `$O.<bucket>.C.<nuid>`, then the info on `$O.<bucket>.M.<name>` with
    /// a rollup), and the chunks are purged when anything fails.
    pub(crate) async fn put_file(
        &self,
        url: &ObjectUrl,
        path: &Path,
        content_type: &'static str,
        counter: &AtomicU64,
    ) -> std::result::Result<u64, StoreError> {
        let bucket = &self.bucket(&url.bucket, true).await?;
        retried(move || self.put_once(bucket, url, path, content_type, counter)).await
    }

    async fn put_once(
        &self,
        bucket: &ObjectStore,
        url: &ObjectUrl,
        path: &Path,
        content_type: &'static str,
        counter: &AtomicU64,
    ) -> std::result::Result<u64, StoreError> {
        let stream = self
            .js
            .get_stream(format!("OBJ_{}", url.bucket))
            .await
            .map_err(|e| classify(url, "opening the bucket's stream", e))?;
        let previous = bucket.info(&url.key).await.ok();
        let nuid = nuid::next().to_string();
        let chunks_subject = format!("$O.{}.C.{nuid}", url.bucket);
        let stored = self
            .publish_object(url, path, content_type, &nuid, &chunks_subject, counter)
            .await;
        match &stored {
            Err(_) => {
                // No orphan chunks: whatever part of this version was stored goes.
                if let Err(e) = stream.purge().filter(&chunks_subject).await {
                    tracing::warn!(object = %url, error = %e, "could not purge the chunks of a failed put");
                }
            }
            Ok(_) => {
                if let Some(old) = previous.filter(|o| !o.nuid.is_empty()) {
                    let old_chunks = format!("$O.{}.C.{}", url.bucket, old.nuid);
                    if let Err(e) = stream.purge().filter(&old_chunks).await {
                        tracing::warn!(object = %url, error = %e, "could not purge the previous version's chunks");
                    }
                }
            }
        }
        stored
    }

    async fn publish_object(
        &self,
        url: &ObjectUrl,
        path: &Path,
        content_type: &'static str,
        nuid: &str,
        chunks_subject: &str,
        counter: &AtomicU64,
    ) -> std::result::Result<u64, StoreError> {
        let local = |e: std::io::Error| {
            StoreError::new(
                Failure::Transient,
                format!("reading {}: {e}", path.display()),
            )
        };
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        let mut sha = Sha256::new();
        let (mut size, mut chunks) = (0usize, 0usize);
        loop {
            let mut chunk = Vec::with_capacity(CHUNK_BYTES);
            (&mut file)
                .take(CHUNK_BYTES as u64)
                .read_to_end(&mut chunk)
                .await
                .map_err(local)?;
            if chunk.is_empty() {
                break;
            }
            sha.update(&chunk);
            size += chunk.len();
            chunks += 1;
            let n = chunk.len() as u64;
            self.js
                .publish(chunks_subject.to_string(), Bytes::from(chunk))
                .await
                .map_err(|e| classify(url, "publishing a chunk", e))?
                .await
                .map_err(|e| classify(url, "storing a chunk", e))?;
            counter.fetch_add(n, Ordering::Relaxed);
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", content_type);
        let info = ObjectInfo {
            name: url.key.clone(),
            description: None,
            metadata: Default::default(),
            headers: Some(headers),
            options: Some(ObjectOptions {
                link: None,
                max_chunk_size: Some(CHUNK_BYTES),
            }),
            bucket: url.bucket.clone(),
            nuid: nuid.to_string(),
            size,
            chunks,
            modified: Some(async_nats::datetime::now()),
            digest: Some(format!(
                "SHA-256={}",
                base64::engine::general_purpose::URL_SAFE.encode(sha.finalize())
            )),
            deleted: false,
        };
        let body = serde_json::to_vec(&info)
            .map_err(|e| StoreError::new(Failure::Invalid, format!("{url}: object info: {e}")))?;
        let mut rollup = async_nats::HeaderMap::new();
        rollup.insert(async_nats::header::NATS_ROLLUP, "sub");
        let meta_subject = format!(
            "$O.{}.M.{}",
            url.bucket,
            base64::engine::general_purpose::URL_SAFE.encode(&url.key)
        );
        self.js
            .publish_with_headers(meta_subject, rollup, Bytes::from(body))
            .await
            .map_err(|e| classify(url, "publishing the object info", e))?
            .await
            .map_err(|e| classify(url, "storing the object info", e))?;
        Ok(size as u64)
    }

    pub(crate) async fn get_small(
        &self,
        url: &ObjectUrl,
        max: u64,
    ) -> std::result::Result<Option<Bytes>, StoreError> {
        let bucket = match self.bucket(&url.bucket, false).await {
            Ok(b) => b,
            Err(e) if e.failure == Failure::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bucket = &bucket;
        retried(move || async move {
            let mut object = match bucket.get(&url.key).await {
                Ok(o) => o,
                Err(e) => {
                    let e = classify(url, "get", e);
                    return match e.failure {
                        Failure::NotFound => Ok(None),
                        _ => Err(e),
                    };
                }
            };
            if object.info().size as u64 > max {
                return Err(StoreError::new(
                    Failure::Invalid,
                    format!(
                        "{url} is {} bytes, more than the {max} expected",
                        object.info().size
                    ),
                ));
            }
            let mut data = Vec::new();
            object
                .read_to_end(&mut data)
                .await
                .map_err(|e| classify(url, "reading", e))?;
            Ok(Some(Bytes::from(data)))
        })
        .await
    }

    pub(crate) async fn delete(&self, url: &ObjectUrl) -> std::result::Result<(), StoreError> {
        let bucket = &self.bucket(&url.bucket, false).await?;
        retried(move || async move {
            bucket
                .delete(&url.key)
                .await
                .map_err(|e| classify(url, "delete", e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::error::Error;

    #[test]
    fn an_error_kind_decides_before_its_message() {
        let url = ObjectUrl::parse("nats-object://b/k", false).unwrap();
        let failure = |e: &dyn Fn() -> StoreError| e().failure;
        assert_eq!(
            failure(&|| classify(
                &url,
                "info",
                Error::new(object_store::InfoErrorKind::NotFound)
            )),
            Failure::NotFound
        );
        assert_eq!(
            failure(&|| classify(
                &url,
                "get",
                Error::new(object_store::GetErrorKind::ConsumerCreate)
            )),
            Failure::Transient
        );
        assert_eq!(
            failure(&|| classify(
                &url,
                "delete",
                Error::new(object_store::DeleteErrorKind::InvalidName)
            )),
            Failure::Invalid
        );
        // No kind that decides: the message does.
        assert_eq!(
            failure(&|| classify(&url, "reading", std::io::Error::other("digest mismatch"))),
            Failure::Corrupt
        );
        assert_eq!(
            failure(&|| classify(&url, "get", Error::new(object_store::GetErrorKind::Other))),
            Failure::Transient
        );
    }
}
