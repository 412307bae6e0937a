//! Git LFS downloads: a registered file streamed from its recipe, whole or one byte range.
//!
//! [`get_object`] plans range reads of the packs ([`plan_reads`]), and a producer task
//! fetches each read (the next one while the current is decoded), decodes its records on
//! the blocking pool (each chunk checked against its BLAKE3 id by `Record::decode`), and
//! sends the chunks, cut to the requested range, through a small channel to the response
//! body ([`ChannelBody`]). Memory per download stays at about two reads (at most
//! [`READ_WINDOW_BYTES`] each) plus [`DECODE_GROUP_BYTES`] of decoded chunks plus
//! [`FRAMES_IN_FLIGHT`] chunks, whatever the file size; a slow client slows the producer
//! down instead of filling memory.
//!
//! The whole file's SHA-256 is not recomputed: registration checked it, every chunk is
//! checked here, and the Git LFS client checks the oid of what it receives. A failure
//! mid-stream cuts the connection, so the client sees a short body, never wrong bytes.
//!
//! Also here: [`recipe_size`] (a registered file's size from the 64-byte recipe header)
//! and [`load_recipe`], used by the batch and verify endpoints.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use gitmodel_format::pack::{parse_records, MAX_PACK_BYTES};
use gitmodel_format::recipe::{RECIPE_MAGIC, RECIPE_VERSION};
use gitmodel_format::{Oid, PackId, Recipe, RecipeChunk, Segment};
use gitmodel_proto::RepoName;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::{error_chain, ApiError};
use crate::http::ResponseBody;
use crate::index::ChunkIndex;
use crate::keys;
use crate::state::AppState;
use crate::storage::StorageError;

/// Largest planned pack read (a read of consecutive records). A segment whose records the
/// chunk index cannot size is read whole instead; segments lie in one pack, so such a
/// read is still at most [`MAX_PACK_BYTES`].
pub const READ_WINDOW_BYTES: u64 = crate::storage::READ_WINDOW_BYTES;
/// Raw bytes decoded in one go on the blocking pool. Bounds memory even for highly
/// compressed records (8 MiB of zstd records can hold gigabytes of zeros).
pub const DECODE_GROUP_BYTES: u64 = 4 * 1024 * 1024;
/// Chunks queued between the producer and the connection.
pub const FRAMES_IN_FLIGHT: usize = 4;
/// Length of a recipe's fixed header (`docs/formats.md`): magic, version, chunker, oid,
/// size, counts.
const RECIPE_HEADER_LEN: u64 = 64;

/// The size of `oid` as registered in `repo`, or `None` if the repository does not have
/// it. Reads only the recipe's header.
pub async fn recipe_size(
    state: &AppState,
    repo: &RepoName,
    oid: &Oid,
) -> Result<Option<u64>, ApiError> {
    let key = keys::recipe_key(repo, oid);
    let head = match state.storage().get_range(&key, 0..RECIPE_HEADER_LEN).await {
        Ok(head) => head,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let field = |range: Range<usize>| head.get(range).unwrap_or_default();
    let version = field(8..12).try_into().map(u32::from_le_bytes);
    let size = field(48..56).try_into().map(u64::from_le_bytes);
    match (version, size) {
        (Ok(RECIPE_VERSION), Ok(size))
            if field(0..8) == RECIPE_MAGIC && field(16..48) == oid.as_bytes() =>
        {
            Ok(Some(size))
        }
        _ => Err(ApiError::internal(format!(
            "the stored recipe of {oid} in {repo} is damaged"
        ))),
    }
}

/// The located recipe of `oid` in `repo`, or `None` if the repository does not have it.
pub async fn load_recipe(
    state: &AppState,
    repo: &RepoName,
    oid: &Oid,
) -> Result<Option<Recipe>, ApiError> {
    let bytes = match state.storage().get(&keys::recipe_key(repo, oid)).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let damaged = |what: String| {
        ApiError::internal(format!(
            "the stored recipe of {oid} in {repo} is damaged: {what}"
        ))
    };
    let recipe = Recipe::decode(&bytes).map_err(|e| damaged(e.to_string()))?;
    if recipe.oid != *oid || !recipe.is_located() {
        return Err(damaged("wrong oid, or not located".to_string()));
    }
    Ok(Some(recipe))
}

/// `GET objects/<oid>`: the file's bytes, or the one range asked for (206).
pub async fn get_object(
    state: &Arc<AppState>,
    repo: &RepoName,
    oid: &Oid,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    let recipe = load_recipe(state, repo, oid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("object {oid} in {repo}")))?;
    let size = recipe.size;
    let range = crate::http::requested_range(headers, size)?;
    let (status, wanted) = match range.clone() {
        Some(range) => (StatusCode::PARTIAL_CONTENT, range),
        None => (StatusCode::OK, 0..size),
    };
    let reads = plan_reads(state.index(), &recipe, wanted.clone())?;
    let body = stream(Arc::clone(state), Arc::new(recipe), reads, wanted.clone());
    let mut response = Response::new(body.map_err(crate::http::BodyError::from).boxed());
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(gitmodel_proto::BINARY),
    );
    crate::http::object_headers(h, wanted.end - wanted.start);
    if range.is_some() {
        let value = format!("bytes {}-{}/{size}", wanted.start, wanted.end - 1);
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// One range read of consecutive records of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub pack: PackId,
    pub offset: u64,
    pub length: u64,
    /// Recipe index of the chunk whose record starts the read.
    pub first_chunk: usize,
    /// Records the read must hold.
    pub records: usize,
    /// Recipe indexes of the chunks to send from it (a sub-range when the read covers a
    /// whole segment of which only part is wanted).
    pub send: Range<usize>,
}

/// The reads that deliver bytes `wanted` of the file, in order. Each segment of the
/// recipe is cut into reads of at most [`READ_WINDOW_BYTES`] at record boundaries, using
/// the record sizes the chunk index knows; when the index places the segment's chunks
/// elsewhere (after a restart, a chunk stored in two packs may be indexed in the other
/// one), the segment is read whole.
pub fn plan_reads(
    index: &ChunkIndex,
    recipe: &Recipe,
    wanted: Range<u64>,
) -> Result<Vec<Read>, ApiError> {
    if wanted.start >= wanted.end {
        return Ok(Vec::new());
    }
    // The chunks overlapping `wanted`.
    let mut start = 0u64;
    let mut first = None;
    let mut end = 0;
    for (i, chunk) in recipe.chunks.iter().enumerate() {
        let chunk_end = start + u64::from(chunk.raw_len);
        if chunk_end > wanted.start && first.is_none() {
            first = Some(i);
        }
        if start < wanted.end {
            end = i + 1;
        }
        start = chunk_end;
    }
    let Some(first) = first else {
        return Ok(Vec::new());
    };
    let needed = first..end;

    let mut reads = Vec::new();
    let mut at = 0usize;
    for segment in &recipe.segments {
        let covers = at..at + segment.count as usize;
        at = covers.end;
        let send = covers.start.max(needed.start)..covers.end.min(needed.end);
        if send.is_empty() {
            continue;
        }
        if segment.length > MAX_PACK_BYTES {
            return Err(ApiError::internal(format!(
                "the recipe of {} has a segment of {} bytes",
                recipe.oid, segment.length
            )));
        }
        match record_lengths(index, segment, &recipe.chunks[covers.clone()]) {
            Some(lengths) => {
                let mut offset =
                    segment.offset + lengths[..send.start - covers.start].iter().sum::<u64>();
                let mut i = send.start;
                while i < send.end {
                    let window_start = i;
                    let mut length = 0;
                    while i < send.end {
                        let record = lengths[i - covers.start];
                        if i > window_start && length + record > READ_WINDOW_BYTES {
                            break;
                        }
                        length += record;
                        i += 1;
                    }
                    reads.push(Read {
                        pack: segment.pack,
                        offset,
                        length,
                        first_chunk: window_start,
                        records: i - window_start,
                        send: window_start..i,
                    });
                    offset += length;
                }
            }
            None => reads.push(Read {
                pack: segment.pack,
                offset: segment.offset,
                length: segment.length,
                first_chunk: covers.start,
                records: covers.len(),
                send,
            }),
        }
    }
    Ok(reads)
}

/// The record length of each chunk of `segment`, if the index places them exactly there.
fn record_lengths(
    index: &ChunkIndex,
    segment: &Segment,
    chunks: &[RecipeChunk],
) -> Option<Vec<u64>> {
    let mut offset = segment.offset;
    let mut lengths = Vec::with_capacity(chunks.len());
    for (loc, chunk) in index
        .get_many_in(
            chunks.iter().map(|c| &c.id),
            &std::collections::HashSet::from([segment.pack]),
        )
        .into_iter()
        .zip(chunks)
    {
        let loc = loc?;
        if loc.pack != segment.pack
            || loc.entry.offset != offset
            || loc.entry.raw_len != chunk.raw_len
        {
            return None;
        }
        offset += loc.entry.record_len();
        lengths.push(loc.entry.record_len());
    }
    (offset == segment.offset + segment.length).then_some(lengths)
}

/// Starts the producer of a download and returns the body it feeds.
fn stream(
    state: Arc<AppState>,
    recipe: Arc<Recipe>,
    reads: Vec<Read>,
    wanted: Range<u64>,
) -> ChannelBody {
    let (tx, rx) = mpsc::channel(FRAMES_IN_FLIGHT);
    let length = wanted.end - wanted.start;
    let task = async move {
        let oid = recipe.oid;
        if let Err(e) = produce(&state, &recipe, &reads, wanted, &tx).await {
            tracing::error!(%oid, error = %error_chain(&e), "download failed mid-stream");
            let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
        }
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
    ChannelBody::new(rx, length)
}

async fn produce(
    state: &Arc<AppState>,
    recipe: &Arc<Recipe>,
    reads: &[Read],
    wanted: Range<u64>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), ApiError> {
    // File offset of every chunk.
    let mut starts = Vec::with_capacity(recipe.chunks.len());
    let mut offset = 0u64;
    for chunk in &recipe.chunks {
        starts.push(offset);
        offset += u64::from(chunk.raw_len);
    }
    let fetch = |read: &Read| -> JoinHandle<Result<Bytes, StorageError>> {
        let storage = Arc::clone(state.storage());
        let key = keys::pack_key(&read.pack);
        let range = read.offset..read.offset + read.length;
        tokio::spawn(async move { storage.get_range(&key, range).await })
    };
    let mut next = reads.first().map(fetch);
    for (i, read) in reads.iter().enumerate() {
        let Some(pending) = next.take() else { break };
        let bytes = pending.await??;
        // Fetch the next read while this one is decoded and sent.
        next = reads.get(i + 1).map(fetch);
        let mut group_start = read.send.start;
        while group_start < read.send.end {
            let mut group_end = group_start;
            let mut raw = 0u64;
            while group_end < read.send.end {
                let len = u64::from(recipe.chunks[group_end].raw_len);
                if group_end > group_start && raw + len > DECODE_GROUP_BYTES {
                    break;
                }
                raw += len;
                group_end += 1;
            }
            let permit = state.verify_permit().await;
            let (span, recipe2, read2) = (bytes.clone(), Arc::clone(recipe), read.clone());
            let group = group_start..group_end;
            let decoded = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                decode_group(&span, &recipe2, &read2, group)
            })
            .await??;
            for (j, chunk) in (group_start..group_end).zip(decoded) {
                let chunk_start = starts[j];
                let from = wanted.start.saturating_sub(chunk_start);
                let to = (wanted.end - chunk_start).min(chunk.len() as u64);
                if from >= to {
                    continue;
                }
                let piece = chunk.slice(from as usize..to as usize);
                if tx.send(Ok(piece)).await.is_err() {
                    // The client went away: nothing left to do.
                    return Ok(());
                }
            }
            group_start = group_end;
        }
    }
    Ok(())
}

/// Bytes of a pack read from storage per frame of a `GET packs/<id>` answer.
pub const PACK_FRAME_BYTES: u64 = 1024 * 1024;
/// Frames of a pack answer read ahead of the connection: with the frame being written,
/// memory per pack download stays under three [`PACK_FRAME_BYTES`].
const PACK_FRAMES_IN_FLIGHT: usize = 1;

/// A body streaming bytes `range` of the object at `key`, read from storage
/// [`PACK_FRAME_BYTES`] at a time as the client takes them. A storage failure midway
/// cuts the answer short (the client sees fewer bytes than `Content-Length`).
pub fn stream_object_range(state: &Arc<AppState>, key: String, range: Range<u64>) -> ResponseBody {
    let (tx, rx) = mpsc::channel(PACK_FRAMES_IN_FLIGHT);
    let length = range.end - range.start;
    let storage = Arc::clone(state.storage());
    let task = async move {
        let mut at = range.start;
        while at < range.end {
            let end = range.end.min(at + PACK_FRAME_BYTES);
            let frame = storage.get_range(&key, at..end).await.map_err(|e| {
                tracing::error!(key, error = %error_chain(&e), "pack download failed mid-stream");
                io::Error::other(e.to_string())
            });
            let failed = frame.is_err();
            if tx.send(frame).await.is_err() || failed {
                // The client went away, or the answer is cut: nothing left to do.
                return;
            }
            at = end;
        }
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
    ChannelBody::new(rx, length)
        .map_err(crate::http::BodyError::from)
        .boxed()
}

/// Decodes the chunks `group` of a read, checking each record against the recipe.
fn decode_group(
    span: &Bytes,
    recipe: &Recipe,
    read: &Read,
    group: Range<usize>,
) -> Result<Vec<Bytes>, ApiError> {
    let damaged = |what: String| {
        ApiError::internal(format!(
            "the server's copy of pack {} is damaged: {what}",
            read.pack
        ))
    };
    let records = parse_records(span).map_err(|e| damaged(e.to_string()))?;
    if records.len() != read.records {
        return Err(damaged(format!(
            "{} records at {}+{} where {} were expected",
            records.len(),
            read.offset,
            read.length,
            read.records
        )));
    }
    group
        .map(|i| {
            let chunk = &recipe.chunks[i];
            let record = &records[i - read.first_chunk];
            if record.id != chunk.id {
                return Err(damaged(format!(
                    "record {} where chunk {} was expected",
                    record.id, chunk.id
                )));
            }
            let raw = record.decode().map_err(|e| damaged(e.to_string()))?;
            if raw.len() != chunk.raw_len as usize {
                return Err(damaged(format!("chunk {} has the wrong length", chunk.id)));
            }
            Ok(Bytes::from(raw))
        })
        .collect()
}

/// A response body fed through a channel, of a known length (so the answer carries a
/// `Content-Length` and the client can tell a cut stream from a complete one).
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl ChannelBody {
    /// A body of exactly `length` bytes, read from `rx`.
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>, length: u64) -> ChannelBody {
        ChannelBody {
            rx,
            remaining: length,
        }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let len = data.len() as u64;
                if len > this.remaining {
                    return Poll::Ready(Some(Err(io::Error::other("more bytes than announced"))));
                }
                this.remaining -= len;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) if this.remaining > 0 => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the body ended early",
            )))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitmodel_format::pack::{encode_chunk, PackBuilder};
    use gitmodel_format::ChunkId;

    fn chunk(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
            .collect()
    }

    /// A recipe of `n` chunks of 1000 bytes in one pack, located through an index.
    fn fixture(n: u8) -> (ChunkIndex, Recipe, Vec<u8>) {
        let raws: Vec<Vec<u8>> = (1..=n).map(|s| chunk(s, 1000)).collect();
        let mut b = PackBuilder::new();
        for raw in &raws {
            let (codec, stored) = encode_chunk(raw);
            b.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
        }
        let (pack, _, entries) = b.finish();
        let index = ChunkIndex::new();
        index.add_pack(pack, &entries);
        let data: Vec<u8> = raws.concat();
        let recipe = Recipe {
            chunker: 1,
            oid: Oid::of(&data),
            size: data.len() as u64,
            chunks: raws
                .iter()
                .map(|r| RecipeChunk {
                    id: ChunkId::of(r),
                    raw_len: r.len() as u32,
                })
                .collect(),
            segments: Vec::new(),
        };
        let located = crate::register::locate(&index, &recipe, |_| true)
            .unwrap()
            .recipe;
        (index, located, data)
    }

    #[test]
    fn plans_cover_exactly_the_wanted_chunks() {
        let (index, recipe, _) = fixture(5);
        assert_eq!(recipe.segments.len(), 1);
        let all = plan_reads(&index, &recipe, 0..5000).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].send.clone(), all[0].records), (0..5, 5));
        assert_eq!(all[0].length, recipe.segments[0].length);

        // Bytes 1500..2001 touch chunks 1 and 2 only: one read of exactly those records.
        let part = plan_reads(&index, &recipe, 1500..2001).unwrap();
        assert_eq!(part.len(), 1);
        assert_eq!((part[0].send.clone(), part[0].first_chunk), (1..3, 1));
        let entry = |i: usize| index.get(&recipe.chunks[i].id).unwrap().entry;
        assert_eq!(part[0].offset, entry(1).offset);
        assert_eq!(
            part[0].length,
            entry(1).record_len() + entry(2).record_len()
        );
        assert!(plan_reads(&index, &recipe, 10..10).unwrap().is_empty());

        // An index that does not know the chunks: the segment is read whole.
        let stranger = ChunkIndex::new();
        let whole = plan_reads(&stranger, &recipe, 1500..2001).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!((whole[0].first_chunk, whole[0].records), (0, 5));
        assert_eq!(whole[0].send, 1..3);
        assert_eq!(whole[0].length, recipe.segments[0].length);
    }
}
