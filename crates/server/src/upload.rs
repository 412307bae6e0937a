//! Git LFS uploads: a raw object body in, new chunks packed, a recipe out.
//!
//! A Git LFS client sends whole files (`PUT objects/<oid>`), not chunks. [`put_object`]
//! does on the server what `git model` does on the client: it streams the body through the
//! content-defined chunker (the same [`ChunkParams::V1`], so the same cut points), hashes
//! every chunk with BLAKE3 and the whole with SHA-256, compresses and packs only the chunks
//! the repository cannot read yet (whatever protocol brought them), and finally writes the
//! repository's recipe through [`register::store_recipe`] (the native registration's key
//! and format).
//!
//! The async side only reads the body (with the idle timeout) and hands blocks of
//! [`BLOCK_BYTES`] to one worker on the blocking pool through a channel of
//! [`BLOCKS_IN_FLIGHT`]: a full channel stops reading, which is the backpressure. Each
//! block carries a CPU permit ([`AppState`]'s verification semaphore), so uploads share
//! the cores with pack verifications. Memory per upload: the blocks in flight, one chunk
//! being cut, and the pack being filled (flushed at [`UPLOAD_PACK_BYTES`]).
//!
//! **Nothing is kept from a refused upload.** Packs must reach storage before the whole
//! body has been hashed (an object can be far larger than memory), so they are *staged*:
//! stored and claimed ([`crate::tenancy::PackClaims`]) but not indexed nor readable by
//! any repository. Only when the body's SHA-256 and length match the URL and
//! `Content-Length` are they committed (indexed, recorded as readable by the repository)
//! and the recipe written. Otherwise the answer is 422 and [`StagedPacks`] deletes the
//! packs this upload stored, unless another request claims or has indexed them; a
//! request that is cut off midway is cleaned up the same way. (On shared storage, where
//! another node may be using an identical pack, staged packs are left in place instead,
//! readable by nobody.)
//!
//! The recipe is not rebuilt from storage as native registration does: the server
//! computed it itself from the bytes it hashed, so there is no client claim to check.
//! Deduplication is against the packs the repository may read ([`crate::tenancy`]):
//! chunks only other repositories hold are packed again, so an upload reveals nothing
//! about other repositories' content.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gitmodel_format::id::OidHasher;
use gitmodel_format::pack::{encode_chunk, PackEntry, RECORD_HEADER_LEN};
use gitmodel_format::recipe::RecipeChunk;
use gitmodel_format::{ChunkId, ChunkParams, Chunker, Oid, PackBuilder, PackId, Recipe};
use gitmodel_proto::RepoName;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::error::{error_chain, ApiError};
use crate::register;
use crate::state::AppState;
use crate::tenancy;

/// Body bytes handed to the worker at once.
pub const BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// Blocks queued for the worker before the body stops being read.
pub const BLOCKS_IN_FLIGHT: usize = 2;
/// A pack is stored once it reaches this size (well under `MAX_PACK_BYTES`, to keep the
/// memory of many concurrent uploads down; packs this size still keep the index small).
pub const UPLOAD_PACK_BYTES: u64 = 16 * 1024 * 1024;

/// What a streamed upload produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// SHA-256 and length of the body.
    pub oid: Oid,
    pub size: u64,
    /// The body's chunks, in order: an unlocated recipe's chunk list.
    pub chunks: Vec<RecipeChunk>,
    /// Chunks the repository could not read before, their raw bytes and their bytes in
    /// packs.
    pub new_chunks: usize,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub packs: usize,
}

/// `PUT objects/<oid>`: stores the body as object `oid` of `repo`. `declared` is the
/// request's `Content-Length`, if any.
pub async fn put_object<B>(
    state: &Arc<AppState>,
    repo: &RepoName,
    oid: Oid,
    declared: Option<u64>,
    body: B,
    idle_timeout: Duration,
) -> Result<(), ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let limit = state.config().max_lfs_object_bytes;
    if let Some(size) = declared.filter(|&d| d > limit) {
        return Err(ApiError::ObjectTooLarge { size, limit });
    }
    let (got, staged) = ingest(state, repo, body, idle_timeout, limit).await?;
    let mismatch = if let Some(declared) = declared.filter(|&d| d != got.size) {
        Some(format!(
            "{} bytes arrived, Content-Length said {declared}",
            got.size
        ))
    } else if got.oid != oid {
        Some(format!("its {} bytes hash to {}", got.size, got.oid))
    } else {
        None
    };
    if let Some(what) = mismatch {
        staged.discard().await;
        return Err(ApiError::ContentMismatch { oid, what });
    }
    staged.commit(repo).await?;
    let recipe = Recipe {
        chunker: ChunkParams::V1.version,
        oid,
        size: got.size,
        chunks: got.chunks,
        segments: Vec::new(),
    };
    let bug = |what: String| ApiError::internal(format!("recipe of upload {oid}: {what}"));
    recipe.validate().map_err(|e| bug(e.to_string()))?;
    // Every chunk is readable by the repository now (found so, or in a pack just committed).
    let located = state
        .locate_fresh(repo, &recipe)
        .await?
        .map_err(|e| bug(e.message))?;
    register::store_recipe(state, repo, &located.recipe, started).await?;
    tracing::info!(
        %repo,
        %oid,
        size = got.size,
        chunks = recipe.chunks.len(),
        new_chunks = got.new_chunks,
        new_bytes = got.new_bytes,
        stored_bytes = got.stored_bytes,
        packs = got.packs,
        ms = started.elapsed().as_millis() as u64,
        "LFS object stored"
    );
    Ok(())
}

/// A staged pack: stored and claimed, not yet indexed.
type Staged = (PackId, Vec<PackEntry>);

/// The packs an upload has staged (see the module header). Must end in
/// [`StagedPacks::commit`] or [`StagedPacks::discard`]; dropped unsettled (the request
/// was cut off), it discards them in a background task.
pub struct StagedPacks {
    state: Arc<AppState>,
    packs: Arc<Mutex<Vec<Staged>>>,
    settled: bool,
}

impl std::fmt::Debug for StagedPacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedPacks")
            .field("packs", &self.lock().len())
            .field("settled", &self.settled)
            .finish()
    }
}

impl StagedPacks {
    fn new(state: &Arc<AppState>) -> StagedPacks {
        StagedPacks {
            state: Arc::clone(state),
            packs: Arc::new(Mutex::new(Vec::new())),
            settled: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Staged>> {
        self.packs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Vec<Staged> {
        std::mem::take(&mut *self.lock())
    }

    /// Makes the packs visible: indexed, and readable by `repo`.
    pub async fn commit(mut self, repo: &RepoName) -> Result<(), ApiError> {
        self.settled = true;
        let packs = self.take();
        for (pack, entries) in &packs {
            self.state.index().add_pack(*pack, entries);
        }
        let granted = tenancy::grant(self.state.storage(), repo, packs.iter().map(|p| p.0)).await;
        for (pack, _) in &packs {
            self.state.claims().release(pack).await;
        }
        Ok(granted?)
    }

    /// Deletes the packs unless someone else needs them.
    pub async fn discard(mut self) {
        self.settled = true;
        discard(&self.state, self.take()).await;
    }
}

impl Drop for StagedPacks {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let packs = self.take();
        if packs.is_empty() {
            return;
        }
        let state = Arc::clone(&self.state);
        if let Ok(runtime) = Handle::try_current() {
            runtime.spawn(async move { discard(&state, packs).await });
        }
    }
}

async fn discard(state: &AppState, packs: Vec<Staged>) {
    for (pack, _) in packs {
        if state.config().index_refresh.is_some() {
            // Shared storage: another node may have stored the identical pack for good.
            state.claims().release(&pack).await;
            continue;
        }
        match state
            .claims()
            .release_and_discard(&pack, state.index(), &**state.storage())
            .await
        {
            Ok(true) => tracing::info!(%pack, "deleted a pack of a refused upload"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%pack, error = %error_chain(&e), "cannot delete a pack of a refused upload")
            }
        }
    }
}

enum Msg {
    /// Body bytes, and the CPU permit their processing holds.
    Data(Vec<Bytes>, OwnedSemaphorePermit),
    /// The body is complete: finish the last chunk and pack.
    End,
}

/// Streams `body` (at most `limit` bytes) through the chunker into staged packs (see the
/// module header). On failure the staged packs are discarded before returning.
pub async fn ingest<B>(
    state: &Arc<AppState>,
    repo: &RepoName,
    mut body: B,
    idle_timeout: Duration,
    limit: u64,
) -> Result<(Ingested, StagedPacks), ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let staged = StagedPacks::new(state);
    // Chunks in damaged packs are packed again (see `crate::scrub`).
    let readable = state.usable_packs(repo).await?;
    let (tx, rx) = mpsc::channel(BLOCKS_IN_FLIGHT);
    let worker = Worker::new(
        Arc::clone(state),
        readable,
        Arc::clone(&staged.packs),
        Handle::current(),
    );
    let worker = tokio::task::spawn_blocking(move || worker.run(rx));
    let fed = feed(state, &mut body, idle_timeout, limit, &tx).await;
    drop(tx);
    // A worker failure (storage) also stops the feeding: report the worker's error first.
    let result = match (worker.await, fed) {
        (Err(e), _) => Err(ApiError::from(e)),
        (Ok(Err(e)), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(Ok(Some(ingested))), Ok(())) => Ok(ingested),
        (Ok(Ok(None)), Ok(())) => Err(ApiError::internal("the upload worker stopped early")),
    };
    match result {
        Ok(ingested) => Ok((ingested, staged)),
        Err(e) => {
            staged.discard().await;
            Err(e)
        }
    }
}

async fn feed<B>(
    state: &AppState,
    body: &mut B,
    idle_timeout: Duration,
    limit: u64,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut parts = Vec::new();
    let mut len = 0;
    let mut total = 0u64;
    loop {
        let data = crate::http::next_data(body, idle_timeout).await?;
        let done = data.is_none();
        if let Some(data) = data {
            total += data.len() as u64;
            if total > limit {
                return Err(ApiError::TooLarge { limit });
            }
            len += data.len();
            parts.push(data);
        }
        if len >= BLOCK_BYTES || (done && !parts.is_empty()) {
            let permit = state.verify_permit().await;
            if tx
                .send(Msg::Data(std::mem::take(&mut parts), permit))
                .await
                .is_err()
            {
                // The worker stopped; its result says why.
                return Ok(());
            }
            len = 0;
        }
        if done {
            // If the worker is gone, its result says why.
            let _ = tx.send(Msg::End).await;
            return Ok(());
        }
    }
}

/// The blocking side of an upload: chunker, hashes, pack being filled.
struct Worker {
    chunker: Chunker,
    /// Body bytes not yet cut into a chunk (the chunker has already scanned them).
    pending: Vec<u8>,
    hasher: OidHasher,
    size: u64,
    packer: Packer,
}

impl Worker {
    fn new(
        state: Arc<AppState>,
        readable: HashSet<PackId>,
        staged: Arc<Mutex<Vec<Staged>>>,
        runtime: Handle,
    ) -> Worker {
        let params = ChunkParams::V1;
        Worker {
            packer: Packer {
                state,
                runtime,
                staged,
                pack: PackBuilder::new(),
                staged_chunks: HashSet::new(),
                readable,
                chunks: Vec::new(),
                new_chunks: 0,
                new_bytes: 0,
                stored_bytes: 0,
                packs: 0,
            },
            chunker: Chunker::new(params),
            pending: Vec::with_capacity(BLOCK_BYTES + params.max_size),
            hasher: OidHasher::new(),
            size: 0,
        }
    }

    /// Processes the body until [`Msg::End`] (`Some`), or until the channel closes
    /// without it (`None`: the request failed; nothing more is stored).
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Result<Option<Ingested>, ApiError> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Data(parts, permit) => {
                    self.feed(&parts)?;
                    drop(permit);
                }
                Msg::End => return self.finish().map(Some),
            }
        }
        Ok(None)
    }

    fn feed(&mut self, parts: &[Bytes]) -> Result<(), ApiError> {
        // Bytes before `scanned` were already fed to the chunker.
        let scanned = self.pending.len();
        for part in parts {
            self.hasher.update(part);
            self.size += part.len() as u64;
            self.pending.extend_from_slice(part);
        }
        let mut pos = scanned;
        let mut start = 0;
        while pos < self.pending.len() {
            match self.chunker.next_boundary(&self.pending[pos..]) {
                Some(n) => {
                    pos += n;
                    self.packer.add(&self.pending[start..pos])?;
                    start = pos;
                }
                None => break,
            }
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn finish(mut self) -> Result<Ingested, ApiError> {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.packer.add(&last)?;
        }
        self.packer.flush()?;
        let p = self.packer;
        Ok(Ingested {
            oid: self.hasher.finish(),
            size: self.size,
            chunks: p.chunks,
            new_chunks: p.new_chunks,
            new_bytes: p.new_bytes,
            stored_bytes: p.stored_bytes,
            packs: p.packs,
        })
    }
}

/// Collects an upload's chunk list and packs the chunks the repository cannot read yet.
struct Packer {
    state: Arc<AppState>,
    runtime: Handle,
    /// Packs stored so far (shared with the request's [`StagedPacks`]).
    staged: Arc<Mutex<Vec<Staged>>>,
    pack: PackBuilder,
    /// Chunks in `pack` or in a staged pack.
    staged_chunks: HashSet<ChunkId>,
    /// The packs the repository may read (listed once, when the upload started).
    readable: HashSet<PackId>,
    chunks: Vec<RecipeChunk>,
    new_chunks: usize,
    new_bytes: u64,
    stored_bytes: u64,
    packs: usize,
}

impl Packer {
    fn add(&mut self, data: &[u8]) -> Result<(), ApiError> {
        let id = ChunkId::of(data);
        // The chunker never cuts more than `max_size` (128 KiB) bytes.
        let raw_len = u32::try_from(data.len())
            .map_err(|_| ApiError::internal("a chunk longer than 4 GiB"))?;
        self.chunks.push(RecipeChunk { id, raw_len });
        let readable = || {
            let locations = self.state.index().locations(&id);
            locations.iter().any(|l| self.readable.contains(&l.pack))
        };
        if self.staged_chunks.contains(&id) || readable() {
            return Ok(());
        }
        let (codec, stored) = encode_chunk(data);
        if !self.pack.is_empty()
            && (!self.pack.fits(stored.len()) || self.pack.finished_len() >= UPLOAD_PACK_BYTES)
        {
            self.flush()?;
        }
        self.pack.push(id, raw_len, codec, &stored);
        self.staged_chunks.insert(id);
        self.new_chunks += 1;
        self.new_bytes += u64::from(raw_len);
        self.stored_bytes += stored.len() as u64 + RECORD_HEADER_LEN;
        Ok(())
    }

    /// Stages the pack being filled (if any): stored and claimed, not yet indexed.
    fn flush(&mut self) -> Result<(), ApiError> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let builder = std::mem::replace(&mut self.pack, PackBuilder::new());
        // Built here from chunks hashed here: nothing to verify, unlike a client's pack.
        let (pack, bytes, entries) = builder.finish();
        let state = &self.state;
        self.runtime.block_on(async {
            state.claims().claim(pack).await;
            // Recorded before the write, so that a failed write still releases the claim.
            self.staged
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((pack, entries));
            // An intact copy stays; a damaged one is replaced (see `crate::scrub`).
            state.write_pack(&pack, bytes.into()).await?;
            Ok::<_, ApiError>(())
        })?;
        self.packs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::ChannelBody;
    use crate::state::ServerConfig;
    use gitmodel_format::chunk_ids;

    use gitmodel_testkit::noise;

    async fn ingest_in_pieces(state: &Arc<AppState>, data: &[u8], piece: usize) -> Ingested {
        let (tx, rx) = mpsc::channel(8);
        let body = ChannelBody::new(rx, data.len() as u64);
        let parts: Vec<Bytes> = data.chunks(piece).map(Bytes::copy_from_slice).collect();
        let sender = tokio::spawn(async move {
            for part in parts {
                tx.send(Ok(part)).await.unwrap();
            }
        });
        let repo = RepoName::new("acme", "up").unwrap();
        let (got, staged) = ingest(state, &repo, body, Duration::from_secs(10), u64::MAX)
            .await
            .unwrap();
        staged.commit(&repo).await.unwrap();
        sender.await.unwrap();
        got
    }

    #[tokio::test]
    async fn streamed_cuts_match_the_whole_buffer_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::new(([127, 0, 0, 1], 0).into(), dir.path());
        let state = AppState::open_local(config).await.unwrap();
        let data = noise(3, 5 * 1024 * 1024 + 12_345);
        // Odd piece sizes, so blocks and chunk boundaries never line up.
        let got = ingest_in_pieces(&state, &data, 77_777).await;
        assert_eq!(got.oid, Oid::of(&data));
        assert_eq!(got.size, data.len() as u64);
        let want: Vec<RecipeChunk> = chunk_ids(ChunkParams::V1, &data[..])
            .collect::<std::io::Result<_>>()
            .unwrap();
        assert_eq!(got.chunks, want);
        assert_eq!(got.new_chunks, want.len());
        assert_eq!(state.index().len(), want.len());

        // The same bytes again, cut differently on the wire: nothing new.
        let again = ingest_in_pieces(&state, &data, 1 << 20).await;
        assert_eq!(again.chunks, got.chunks);
        assert_eq!((again.new_chunks, again.packs), (0, 0));

        let empty = ingest_in_pieces(&state, b"", 1).await;
        assert_eq!(
            (empty.oid, empty.size, empty.chunks.len()),
            (Oid::empty(), 0, 0)
        );
    }
}
