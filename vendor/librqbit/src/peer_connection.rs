use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{Error, Result, session::CheckedIncomingConnection, stream_connect::ConnectionKind};
use buffers::{ByteBuf, ByteBufOwned};
use futures::TryFutureExt;
use librqbit_core::{
    hash_id::Id20,
    lengths::{ChunkInfo, ValidPieceIndex},
    peer_id::try_decode_peer_id,
};
use parking_lot::RwLock;
use peer_binary_protocol::{
    Handshake, MAX_MSG_LEN, Message,
    extended::{
        ExtendedMessage, PeerExtendedMessageIds, handshake::ExtendedHandshake,
        ut_metadata::UtMetadata, ut_pex::UtPex,
    },
    serialize_piece_preamble,
};
use serde::{Deserialize, Serialize};
use serde_with::serde_as;
use tokio::time::timeout;
use tracing::{Instrument, debug, trace, trace_span};

use crate::{
    read_buf::ReadBuf,
    spawn_utils::BlockingSpawner,
    stream_connect::StreamConnector,
    type_aliases::{BoxAsyncReadVectored, BoxAsyncWrite},
};

pub trait PeerConnectionHandler {
    fn on_connected(&self, _connection_time: Duration) {}
    fn should_send_bitfield(&self) -> bool;
    fn serialize_bitfield_message_to_buf(&self, buf: &mut [u8]) -> anyhow::Result<usize>;
    fn on_handshake(&self, handshake: Handshake, ckind: ConnectionKind) -> anyhow::Result<()>;
    fn on_extended_handshake(
        &self,
        extended_handshake: &ExtendedHandshake<ByteBuf>,
    ) -> anyhow::Result<()>;
    async fn on_received_message(&self, msg: Message<'_>) -> anyhow::Result<()>;
    fn should_transmit_have(&self, id: ValidPieceIndex) -> bool;
    /// swarmfs patch: whether this `have` may wait up to `HAVE_DELAY` for others.
    fn have_may_wait(&self, _piece: u32) -> bool {
        false
    }
    /// swarmfs patch: whether the peer cancelled this chunk's request (it is then not
    /// sent); forgets the cancel.
    fn upload_cancelled(&self, _chunk: &ChunkInfo) -> bool {
        false
    }
    fn on_uploaded_bytes(&self, bytes: u32);
    fn read_chunk(&self, chunk: &ChunkInfo, buf: &mut [u8]) -> anyhow::Result<()>;
    fn update_my_extended_handshake(
        &self,
        _handshake: &mut ExtendedHandshake<ByteBuf>,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    fn client_name_and_version(&self) -> &str {
        crate::client_name_and_version()
    }
}

/// swarmfs patch: how long a `have` the application lets wait (`have_may_wait`) waits
/// for others to go out in the same write.
const HAVE_DELAY: Duration = Duration::from_millis(25);

/// swarmfs patch: the writer's buffer holds this many messages of the largest size, so
/// that the messages already queued when it writes go out in one write.
const WRITE_BUF_LEN: usize = 4 * MAX_MSG_LEN;

#[derive(Debug)]
pub enum WriterRequest {
    Message(Message<'static>),
    UtMetadata(UtMetadata<ByteBufOwned>),
    UtPex(UtPex<ByteBufOwned>),
    /// swarmfs patch: tell the peer we have just asked a seeder for this piece (sent only
    /// if it declared `swarmfs_fetching`).
    /// (piece, whether a reader waits on it: sent as -(piece + 1))
    SwarmfsFetching(u32, bool),
    /// swarmfs patch: tell a neighbour we have just asked a peer farther away for this
    /// piece (as `SwarmfsFetching`, in a dict under `near`: receivers that do not know the
    /// key ignore it).
    SwarmfsNearFetching(u32, bool),
    /// swarmfs patch: a `swarmfs_profile` message (sent only if the peer declared it):
    /// `msg_type` 0 request, 1 data (`total_size`, `data`), 2 reject.
    SwarmfsProfile {
        msg_type: u8,
        piece: u32,
        total_size: u32,
        data: bytes::Bytes,
    },
    /// swarmfs patch: tell the peer we are asking it for this piece and a reader waits on
    /// it (`true`) or will soon (read-ahead): a `swarmfs_fetching` dictionary, `wait` or
    /// `soon` (sent only if it declared `swarmfs_fetching`). Its uploader serves such
    /// pieces first.
    SwarmfsAsking(u32, bool),
    /// A chunk to send, with the upload scheduler's slot (swarmfs patch), given back once
    /// the chunk is written.
    ReadChunkRequest(ChunkInfo, Option<UploadSlot>),
    Disconnect(anyhow::Result<()>),
}

/// swarmfs patch: a chunk's place among those handed to a writer; given back (the
/// function runs) once the chunk is written, or dropped unsent.
pub struct UploadSlot(Option<Box<dyn FnOnce() + Send + Sync>>);

impl UploadSlot {
    pub fn new(on_release: impl FnOnce() + Send + Sync + 'static) -> UploadSlot {
        UploadSlot(Some(Box::new(on_release)))
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f()
        }
    }
}

impl std::fmt::Debug for UploadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadSlot")
    }
}

#[serde_as]
#[derive(Default, Debug, Copy, Clone, Serialize, Deserialize, Eq, PartialEq)]
pub struct PeerConnectionOptions {
    #[serde_as(as = "Option<serde_with::DurationSeconds>")]
    pub connect_timeout: Option<Duration>,

    #[serde_as(as = "Option<serde_with::DurationSeconds>")]
    pub read_write_timeout: Option<Duration>,

    #[serde_as(as = "Option<serde_with::DurationSeconds>")]
    pub keep_alive_interval: Option<Duration>,

    /// The most chunk requests to keep outstanding per peer (default 128, and
    /// never more than the peer's reqq). A newly needed piece, such as the
    /// one at a stream's read position after a seek, is requested only after
    /// those, so a smaller window makes streams react faster to seeks.
    pub max_request_window: Option<usize>,
}

pub(crate) struct PeerConnection<H> {
    handler: H,
    addr: SocketAddr,
    info_hash: Id20,
    peer_id: Id20,
    options: PeerConnectionOptions,
    spawner: BlockingSpawner,
    connector: Arc<StreamConnector>,
}

#[cfg(not(feature = "miri"))]
pub(crate) async fn with_timeout<T>(
    name: &'static str,
    timeout_value: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> crate::Result<T> {
    match timeout(timeout_value, fut).await {
        Ok(v) => v,
        Err(_) => Err(Error::Timeout(name)),
    }
}

#[cfg(feature = "miri")]
pub(crate) async fn with_timeout<T>(
    _name: &'static str,
    _timeout_value: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> crate::Result<T> {
    fut.await
}

struct ManagePeerArgs {
    handshake_supports_extended: bool,
    read_buf: ReadBuf,
    write_buf: Box<[u8; WRITE_BUF_LEN]>,
    read: BoxAsyncReadVectored,
    write: BoxAsyncWrite,
    outgoing_chan: tokio::sync::mpsc::UnboundedReceiver<WriterRequest>,
    have_broadcast: tokio::sync::broadcast::Receiver<ValidPieceIndex>,
}

impl<H: PeerConnectionHandler> PeerConnection<H> {
    pub fn new(
        addr: SocketAddr,
        info_hash: Id20,
        peer_id: Id20,
        handler: H,
        options: Option<PeerConnectionOptions>,
        spawner: BlockingSpawner,
        connector: Arc<StreamConnector>,
    ) -> Self {
        PeerConnection {
            handler,
            addr,
            info_hash,
            peer_id,
            spawner,
            options: options.unwrap_or_default(),
            connector,
        }
    }

    // By the time this is called:
    // read_buf should start with valuable data. The handshake should be removed from it.
    pub async fn manage_peer_incoming(
        &self,
        outgoing_chan: tokio::sync::mpsc::UnboundedReceiver<WriterRequest>,
        mut incoming: CheckedIncomingConnection,
        have_broadcast: tokio::sync::broadcast::Receiver<ValidPieceIndex>,
    ) -> Result<()> {
        use tokio::io::AsyncWriteExt;

        let rwtimeout = self
            .options
            .read_write_timeout
            .unwrap_or_else(|| Duration::from_secs(10));

        if incoming.handshake.info_hash != self.info_hash {
            return Err(Error::WrongInfoHash);
        }

        if incoming.handshake.peer_id == self.peer_id {
            return Err(Error::ConnectingToOurselves);
        }

        trace!(
            "incoming connection: id={:?}",
            try_decode_peer_id(incoming.handshake.peer_id)
        );

        let mut write_buf = Box::new([0u8; WRITE_BUF_LEN]);
        let my_handshake = Handshake::new(self.info_hash, self.peer_id);
        let hlen = my_handshake.serialize_unchecked_len(&mut *write_buf);
        with_timeout(
            "writing handshake",
            rwtimeout,
            incoming
                .writer
                .write_all(&write_buf[..hlen])
                .map_err(Error::WriteHandshake),
        )
        .await?;

        // What the peer supports is in the peer's handshake, not in ours.
        let handshake_supports_extended = incoming.handshake.supports_extended();

        self.handler
            .on_handshake(incoming.handshake, incoming.kind)
            .map_err(Error::Anyhow)?;

        self.manage_peer(ManagePeerArgs {
            handshake_supports_extended,
            read_buf: incoming.read_buf,
            write_buf,
            read: incoming.reader,
            write: incoming.writer,
            outgoing_chan,
            have_broadcast,
        })
        .await
    }

    pub async fn manage_peer_outgoing(
        &self,
        outgoing_chan: tokio::sync::mpsc::UnboundedReceiver<WriterRequest>,
        have_broadcast: tokio::sync::broadcast::Receiver<ValidPieceIndex>,
    ) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let rwtimeout = self
            .options
            .read_write_timeout
            .unwrap_or_else(|| Duration::from_secs(10));

        let connect_timeout = self
            .options
            .connect_timeout
            .unwrap_or_else(|| Duration::from_secs(10));

        let now = Instant::now();
        let (ckind, mut read, mut write) = with_timeout(
            "connecting",
            connect_timeout,
            self.connector.connect(self.addr),
        )
        .await?;

        async move {
            self.handler.on_connected(now.elapsed());

            let mut write_buf = Box::new([0u8; WRITE_BUF_LEN]);
            let handshake = Handshake::new(self.info_hash, self.peer_id);
            let hsz = handshake.serialize_unchecked_len(&mut *write_buf);
            with_timeout(
                "writing",
                rwtimeout,
                write
                    .write_all(&write_buf[..hsz])
                    .map_err(Error::WriteHandshake),
            )
            .await?;

            let mut read_buf = ReadBuf::new();
            let h = read_buf.read_handshake(&mut read, rwtimeout).await?;
            let handshake_supports_extended = h.supports_extended();
            trace!(
                peer_id=?h.peer_id,
                decoded_id=?try_decode_peer_id(h.peer_id),
                "connected",
            );
            if h.info_hash != self.info_hash {
                return Err(Error::WrongInfoHash);
            }

            if h.peer_id == self.peer_id {
                return Err(Error::ConnectingToOurselves);
            }

            self.handler.on_handshake(h, ckind).map_err(Error::Anyhow)?;

            self.manage_peer(ManagePeerArgs {
                handshake_supports_extended,
                read_buf,
                write_buf,
                read,
                write,
                outgoing_chan,
                have_broadcast,
            })
            .await
        }
        .instrument(trace_span!("", kind=%ckind))
        .await
    }

    async fn manage_peer(&self, args: ManagePeerArgs) -> Result<()> {
        let ManagePeerArgs {
            handshake_supports_extended,
            mut read_buf,
            mut write_buf,
            mut read,
            mut write,
            mut outgoing_chan,
            mut have_broadcast,
        } = args;

        use tokio::io::AsyncWriteExt;

        let rwtimeout = self
            .options
            .read_write_timeout
            .unwrap_or_else(|| Duration::from_secs(10));

        let extended_handshake: RwLock<Option<PeerExtendedMessageIds>> = RwLock::new(None);
        let extended_handshake_ref = &extended_handshake;
        let supports_extended = handshake_supports_extended;

        if supports_extended {
            let mut my_extended = ExtendedHandshake::new();
            my_extended.v = Some(ByteBuf(self.handler.client_name_and_version().as_bytes()));
            my_extended.yourip = Some(self.addr.ip().into());
            self.handler
                .update_my_extended_handshake(&mut my_extended)
                .map_err(Error::Anyhow)?;
            let my_extended = Message::Extended(ExtendedMessage::Handshake(my_extended));
            trace!("sending extended handshake: {:?}", &my_extended);
            let esz = my_extended.serialize(&mut *write_buf, &Default::default)?;
            with_timeout(
                "writing extended handshake",
                rwtimeout,
                write.write_all(&write_buf[..esz]).map_err(Error::Write),
            )
            .await?;
        }

        let writer = async move {
            let keep_alive_interval = self
                .options
                .keep_alive_interval
                .unwrap_or_else(|| Duration::from_secs(120));

            if self.handler.should_send_bitfield() {
                let len = self
                    .handler
                    .serialize_bitfield_message_to_buf(&mut *write_buf)
                    .map_err(Error::Anyhow)?;
                with_timeout(
                    "writing bitfield",
                    rwtimeout,
                    write.write_all(&write_buf[..len]).map_err(Error::Write),
                )
                .await?;
                trace!("sent bitfield");
            }

            let len = Message::Unchoke.serialize(&mut *write_buf, &Default::default)?;
            with_timeout(
                "writing",
                rwtimeout,
                write.write_all(&write_buf[..len]).map_err(Error::Write),
            )
            .await?;
            trace!("sent unchoke");

            let mut broadcast_closed = false;
            // swarmfs patch: a message that arrived while `have`s waited, sent next.
            let mut pending: Option<WriterRequest> = None;

            loop {
                let req = if let Some(req) = pending.take() { req } else { loop {
                    break tokio::select! {
                        r = have_broadcast.recv(), if !broadcast_closed => match r {
                            Ok(id) => {
                                if self.handler.should_transmit_have(id) {
                                     WriterRequest::Message(Message::Have(id.get()))
                                } else {
                                    continue
                                }
                            },
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                broadcast_closed = true;
                                debug!("broadcast channel closed, will not poll it anymore");
                                continue
                            },
                            _ => continue
                        },
                        r = timeout(keep_alive_interval, outgoing_chan.recv()) => match r {
                            Ok(Some(msg)) => msg,
                            Ok(None) => {
                                return Err(Error::TorrentIsNotLive);
                            }
                            Err(_) => WriterRequest::Message(Message::KeepAlive),
                        }
                    };
                } };

                tokio::task::yield_now().await;

                let mut uploaded_add = None;
                // swarmfs patch: the upload scheduler's slots of the chunks in this write.
                let mut slots = Vec::new();

                trace!("about to send: {:?}", &req);
                let ext_msg_ids = &|| {
                    extended_handshake_ref
                        .read()
                        .as_ref()
                        .map(|e| *e)
                        .unwrap_or_default()
                };

                let len = match req {
                    WriterRequest::Message(msg @ Message::Have(first)) => {
                        // swarmfs patch: the other `have`s already waiting go in the same
                        // write. With Nagle off each write is a packet, and a fleet
                        // sends a `have` per piece to every peer (16 hosts, 32 KiB pieces:
                        // ~60000 a host). One the application lets wait (`have_may_wait`)
                        // waits up to HAVE_DELAY for more, or for another message.
                        let mut len = msg.serialize(&mut *write_buf, ext_msg_ids)?;
                        let mut may_wait = self.handler.have_may_wait(first);
                        let deadline = tokio::time::Instant::now() + HAVE_DELAY;
                        // Appends the `have` if the peer should get it.
                        let add = |id: ValidPieceIndex,
                                   buf: &mut [u8],
                                   len: &mut usize,
                                   may_wait: &mut bool|
                         -> Result<()> {
                            if self.handler.should_transmit_have(id) {
                                *may_wait &= self.handler.have_may_wait(id.get());
                                *len += Message::Have(id.get())
                                    .serialize(&mut buf[*len..], ext_msg_ids)?;
                            }
                            Ok(())
                        };
                        while write_buf.len() - len >= 64 {
                            match have_broadcast.try_recv() {
                                Ok(id) => {
                                    add(id, &mut write_buf[..], &mut len, &mut may_wait)?;
                                    continue;
                                }
                                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                                    continue;
                                }
                                Err(_) => {}
                            }
                            if !may_wait || broadcast_closed {
                                break;
                            }
                            tokio::select! {
                                biased;
                                r = outgoing_chan.recv() => {
                                    pending = Some(r.ok_or(Error::TorrentIsNotLive)?);
                                    break;
                                }
                                r = have_broadcast.recv() => match r {
                                    Ok(id) => add(id, &mut write_buf[..], &mut len, &mut may_wait)?,
                                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                        broadcast_closed = true;
                                    }
                                    Err(_) => {}
                                },
                                _ = tokio::time::sleep_until(deadline) => break,
                            }
                        }
                        len
                    }
                    WriterRequest::Message(msg) => msg.serialize(&mut *write_buf, ext_msg_ids)?,
                    WriterRequest::UtMetadata(utm) => {
                        Message::Extended(ExtendedMessage::UtMetadata(utm.as_borrowed()))
                            .serialize(&mut *write_buf, ext_msg_ids)?
                    }
                    WriterRequest::UtPex(ut_pex) => {
                        Message::Extended(ExtendedMessage::UtPex(ut_pex.as_borrowed()))
                            .serialize(&mut *write_buf, ext_msg_ids)?
                    }
                    WriterRequest::SwarmfsFetching(piece, for_read) => {
                        let Some(id) = ext_msg_ids().swarmfs_fetching else {
                            continue;
                        };
                        Message::Extended(ExtendedMessage::Dyn(
                            id,
                            bencode::BencodeValue::Integer(fetching_value(piece, for_read)),
                        ))
                        .serialize(&mut *write_buf, ext_msg_ids)?
                    }
                    WriterRequest::SwarmfsNearFetching(piece, for_read) => {
                        let Some(id) = ext_msg_ids().swarmfs_fetching else {
                            continue;
                        };
                        let mut d = std::collections::HashMap::new();
                        d.insert(
                            ByteBuf(&b"near"[..]),
                            bencode::BencodeValue::Integer(fetching_value(piece, for_read)),
                        );
                        Message::Extended(ExtendedMessage::Dyn(id, bencode::BencodeValue::Dict(d)))
                            .serialize(&mut *write_buf, ext_msg_ids)?
                    }
                    WriterRequest::SwarmfsAsking(piece, wait) => {
                        let Some(id) = ext_msg_ids().swarmfs_fetching else {
                            continue;
                        };
                        Message::Extended(ExtendedMessage::Dyn(id, asking_value(piece, wait)))
                            .serialize(&mut *write_buf, ext_msg_ids)?
                    }
                    WriterRequest::SwarmfsProfile {
                        msg_type,
                        piece,
                        total_size,
                        data,
                    } => {
                        let Some(id) = ext_msg_ids().swarmfs_profile else {
                            continue;
                        };
                        use bencode::BencodeValue as V;
                        let mut d = std::collections::HashMap::new();
                        d.insert(ByteBuf(b"msg_type"), V::Integer(i64::from(msg_type)));
                        d.insert(ByteBuf(b"piece"), V::Integer(i64::from(piece)));
                        if msg_type == 1 {
                            d.insert(ByteBuf(b"total_size"), V::Integer(i64::from(total_size)));
                            d.insert(ByteBuf(b"data"), V::Bytes(ByteBuf(&data)));
                        }
                        Message::Extended(ExtendedMessage::Dyn(id, V::Dict(d)))
                            .serialize(&mut *write_buf, ext_msg_ids)?
                    }
                    WriterRequest::ReadChunkRequest(chunk, slot) => {
                        // swarmfs patch: cancelled by the peer while it waited here.
                        if self.handler.upload_cancelled(&chunk) {
                            continue;
                        }
                        slots.extend(slot);
                        #[allow(unused_mut)]
                        let mut skip_reading_for_e2e_tests = false;

                        #[cfg(test)]
                        {
                            use tracing::warn;
                            // This is poor-mans fault injection for running e2e tests.
                            use crate::tests::test_util::TestPeerMetadata;
                            let tpm = TestPeerMetadata::from_peer_id(self.peer_id);
                            use rand::RngExt;
                            if rand::rng().random_bool(tpm.disconnect_probability()) {
                                return Err(Error::TestDisconnect);
                            }

                            #[allow(clippy::cast_possible_truncation)]
                            let sleep_ms = (rand::rng().random::<f64>()
                                * (tpm.max_random_sleep_ms as f64))
                                as u64;
                            if sleep_ms > 0 {
                                tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
                            }

                            if rand::rng().random_bool(tpm.bad_data_probability()) {
                                warn!(
                                    "will NOT actually read the data to simulate a malicious peer that sends garbage"
                                );
                                write_buf.fill(0);
                                skip_reading_for_e2e_tests = true;
                            }
                        }

                        // this whole section is an optimization
                        let preamble_len = serialize_piece_preamble(&chunk, &mut *write_buf);
                        let full_len = preamble_len + chunk.size as usize;
                        if !skip_reading_for_e2e_tests {
                            self.spawner
                                .block_in_place_with_semaphore(|| {
                                    self.handler
                                        .read_chunk(&chunk, &mut write_buf[preamble_len..full_len])
                                })
                                .await
                                .map_err(Error::ReadChunk)?;
                        }

                        uploaded_add = Some(chunk.size);
                        full_len
                    }
                    WriterRequest::Disconnect(res) => {
                        trace!("disconnect requested, closing writer");
                        match res {
                            Ok(()) => return Err(Error::Disconnect),
                            Err(e) => return Err(Error::DisconnectWithSource(e)),
                        }
                    }
                };

                // swarmfs patch: the messages already queued go in the same write, while
                // the buffer has room for the largest. A chunk request, a chunk sent and
                // a `have` were a write each, and without Nagle each write is a packet
                // (8 hosts, 32 KiB pieces: four writes a chunk received).
                let mut len = len;
                while pending.is_none() && WRITE_BUF_LEN - len >= MAX_MSG_LEN {
                    if let Ok(id) = have_broadcast.try_recv() {
                        if self.handler.should_transmit_have(id) {
                            len += Message::Have(id.get())
                                .serialize(&mut write_buf[len..], ext_msg_ids)?;
                        }
                        continue;
                    }
                    let Ok(next) = outgoing_chan.try_recv() else {
                        break;
                    };
                    match next {
                        WriterRequest::Message(ref msg) if !matches!(msg, Message::Have(_)) => {
                            len += msg.serialize(&mut write_buf[len..], ext_msg_ids)?;
                        }
                        WriterRequest::SwarmfsFetching(piece, for_read) => {
                            if let Some(id) = ext_msg_ids().swarmfs_fetching {
                                len += Message::Extended(ExtendedMessage::Dyn(
                                    id,
                                    bencode::BencodeValue::Integer(fetching_value(
                                        piece, for_read,
                                    )),
                                ))
                                .serialize(&mut write_buf[len..], ext_msg_ids)?;
                            }
                        }
                        WriterRequest::SwarmfsAsking(piece, wait) => {
                            if let Some(id) = ext_msg_ids().swarmfs_fetching {
                                len += Message::Extended(ExtendedMessage::Dyn(
                                    id,
                                    asking_value(piece, wait),
                                ))
                                .serialize(&mut write_buf[len..], ext_msg_ids)?;
                            }
                        }
                        WriterRequest::ReadChunkRequest(chunk, _)
                            if cfg!(not(test)) && self.handler.upload_cancelled(&chunk) => {}
                        // (tests inject faults on the first message's path)
                        WriterRequest::ReadChunkRequest(chunk, slot) if cfg!(not(test)) => {
                            slots.extend(slot);
                            let preamble_len =
                                serialize_piece_preamble(&chunk, &mut write_buf[len..]);
                            let start = len + preamble_len;
                            let end = start + chunk.size as usize;
                            self.spawner
                                .block_in_place_with_semaphore(|| {
                                    self.handler.read_chunk(&chunk, &mut write_buf[start..end])
                                })
                                .await
                                .map_err(Error::ReadChunk)?;
                            uploaded_add = Some(uploaded_add.unwrap_or(0) + chunk.size);
                            len = end;
                        }
                        other => {
                            pending = Some(other);
                        }
                    }
                }

                with_timeout(
                    "writing",
                    rwtimeout,
                    write.write_all(&write_buf[..len]).map_err(Error::Write),
                )
                .await?;

                drop(slots);
                if let Some(uploaded_add) = uploaded_add {
                    self.handler.on_uploaded_bytes(uploaded_add)
                }
            }

            // For type inference.
            #[allow(unreachable_code)]
            Ok::<_, Error>(())
        };

        let reader = async move {
            loop {
                let message = read_buf.read_message(&mut read, rwtimeout).await?;
                trace!("received: {:?}", &message);

                tokio::task::yield_now().await;

                if let Message::Extended(ExtendedMessage::Handshake(h)) = &message {
                    *extended_handshake_ref.write() = Some(h.peer_extended_messages());
                    self.handler
                        .on_extended_handshake(h)
                        .map_err(Error::Anyhow)?;
                } else {
                    self.handler
                        .on_received_message(message)
                        .await
                        .map_err(Error::Anyhow)?;
                }
            }

            // For type inference.
            #[allow(unreachable_code)]
            Ok::<_, Error>(())
        };

        tokio::select! {
            r = reader => {
                if let Err(e) = r.as_ref() {
                    trace!("reader finished with error: {e:#}");
                } else {
                    trace!("reader finished without error");
                }
                r
            }
            r = writer => {
                if let Err(e) = r.as_ref() {
                    trace!("writer finished with error: {e:#}");
                } else {
                    trace!("writer finished without error");
                }
                r
            }
        }
    }
}

/// swarmfs patch: a `swarmfs_fetching` message that says we are asking the receiver for
/// `piece`: `{"wait": piece}` when a reader waits on it, `{"soon": piece}` for read-ahead.
/// (An integer value is a fetch from a seeder, [`fetching_value`].)
pub(crate) fn asking_value(piece: u32, wait: bool) -> bencode::BencodeValue<ByteBuf<'static>> {
    let key: &'static [u8] = if wait { b"wait" } else { b"soon" };
    let mut d = std::collections::HashMap::new();
    d.insert(ByteBuf(key), bencode::BencodeValue::Integer(i64::from(piece)));
    bencode::BencodeValue::Dict(d)
}

/// swarmfs patch: a `swarmfs_fetching` message's value: the piece, or -(piece + 1) when a
/// reader waits on it (a receiver that does not know the sign ignores it: not a piece).
pub(crate) fn fetching_value(piece: u32, for_read: bool) -> i64 {
    if for_read {
        -(i64::from(piece) + 1)
    } else {
        i64::from(piece)
    }
}
