//! swarmfs patch: lets the embedding application choose which pieces are requested.
//!
//! Stock librqbit requests stream pieces first, then selected pieces in file order. An
//! application that serves reads from a lazily fetched torrent needs more: the exact
//! pieces readers wait on first, a background order of its own (one that differs between
//! hosts, so a fleet has pieces to trade), and a way to hold the background back while
//! reads are waiting.

use std::sync::Arc;

/// What a far peer would be asked for (`PiecePicker::may_ask_far`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarAsk {
    /// A piece wanted soon or in the background.
    Queued,
    /// The same, when the peer has nothing else to be asked for.
    Idle,
    /// A piece a reader waits on.
    Read,
}

/// Decides the order in which pieces are requested. Installed with
/// `AddTorrentOptions::piece_picker`.
pub trait PiecePicker: Send + Sync {
    /// Appends the pieces wanted now, most urgent first (for example the pieces readers
    /// wait on). They are requested before anything else, selected or not.
    fn urgent(&self, out: &mut Vec<u32>);

    /// Appends pieces wanted soon (for example read-ahead of a sequential reader): after
    /// the urgent ones and before the background, rarest first, ties in the given order.
    /// Selected or not; not held back by `background_allowed`.
    fn soon(&self, _out: &mut Vec<u32>) {}

    /// The order in which the background download takes the selected pieces: tiers, the
    /// first tier before the second and so on; within a tier the piece fewest connected
    /// peers have (rarest first), ties going to the earlier piece. Pieces missing from
    /// it are not fetched in the background. `None`: librqbit's file order.
    fn background_order(&self) -> Option<Arc<[Vec<u32>]>>;

    /// An urgent piece another peer has held this long is asked of a different peer.
    fn urgent_steal_after(&self) -> Option<std::time::Duration> {
        None
    }

    /// An urgent piece another peer is sending is helped by others (the chunks still
    /// missing asked of them too) only once it has been in flight this long. `None`: at
    /// once.
    fn urgent_help_after(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether background (not urgent) pieces may be started now. Only honoured while
    /// some live peer has, or is sending, one of the urgent pieces.
    fn background_allowed(&self) -> bool {
        true
    }

    /// While the background is held back, how many of its first tiers still go on.
    fn tiers_while_held_back(&self) -> usize {
        0
    }

    /// Whether a peer that has every piece (the origin) may be asked now for `piece`, an
    /// urgent or soon one. `peers`: the addresses of the live peers that are not seeders.
    /// Every host of a fleet reads the same start-up piece at about the same moment; when
    /// all ask the origin, its uplink carries one copy per host. A picker can stagger the
    /// asks so that one host fetches the piece and the rest take it from that host.
    fn may_ask_seeder(&self, _piece: u32, _peers: &[std::net::IpAddr]) -> bool {
        true
    }

    /// The request window for a peer that is not a seeder, given how many such peer
    /// connections are live, when it should differ from the session's. Chunks in flight
    /// share this host's downlink roughly by count: with sixteen hosts each asking each
    /// peer for 16, the origin got ~1/8 of it, and served the few hosts it unchokes at
    /// half its rate.
    fn peer_request_window(&self, _live_peers: usize) -> Option<usize> {
        None
    }

    /// The request window for a seeder peer now, when it should differ from the
    /// session's: the origin's uplink is the fleet's bottleneck, and a window sized for
    /// a read's latency leaves it idle between requests on a loaded link.
    fn seeder_request_window(&self) -> Option<usize> {
        None
    }

    /// Whether a seeder may be asked now for `piece` in the background (`peers` as for
    /// `may_ask_seeder`). Hosts that join together all find the same pieces that only
    /// the origin has; a picker can let one ask first, so the others hear of it
    /// (`swarmfs_fetching`) and take it from that host.
    fn may_ask_seeder_in_background(&self, _piece: u32, _peers: &[std::net::IpAddr]) -> bool {
        true
    }

    /// A peer told us (BEP 10 message `swarmfs_fetching`) that it has just asked a seeder
    /// for `piece` (`for_read`: a reader waits on it there): it will have it shortly and
    /// announce it.
    fn on_peer_fetching(&self, _piece: u32, _peer: std::net::IpAddr, _for_read: bool) {}

    /// Whether another peer is fetching `piece` from a seeder now (see
    /// `on_peer_fetching`): a seeder is then not asked for it in the background, and the
    /// piece comes from that peer once it announces it.
    fn fetching_elsewhere(&self, _piece: u32) -> bool {
        false
    }

    /// Whether the `have` for `piece` may wait a moment (`HAVE_DELAY`) to go out in one
    /// write with the next ones. False (at once) by default.
    fn have_may_wait(&self, _piece: u32) -> bool {
        false
    }

    /// Whether `piece` is being made available another way now (the application rebuilds
    /// it from local data): no peer is asked for it until this turns false. The
    /// application then calls `wake_piece_requesters`, and `add_local_piece` if it made it.
    fn deferred(&self, _piece: u32) -> bool {
        false
    }

    /// A boot profile to offer peers (BEP 10 `swarmfs_profile`): the bytes a peer that
    /// asks gets. `None`: this host has none (a request is rejected).
    fn profile_offer(&self) -> Option<Arc<[u8]>> {
        None
    }

    /// Whether to ask a peer that offers `swarmfs_profile` for its profile now. True
    /// takes one of the picker's asks; `profile_ask_end` gives it back.
    fn profile_ask_begin(&self) -> bool {
        false
    }

    /// An ask begun with `profile_ask_begin` ended (answered, rejected, malformed, or its
    /// connection closed).
    fn profile_ask_end(&self) {}

    /// A whole profile received from `peer` (at most the size the picker allows, see
    /// `profile_max_len`): a hint for the order of fetching, never data.
    fn on_profile(&self, _profile: &[u8], _peer: std::net::IpAddr) {}

    /// The largest profile accepted from a peer; a peer announcing more is not asked on.
    fn profile_max_len(&self) -> usize {
        0
    }

    /// A piece the application wrote in part (`add_partial_piece`) failed its check: the
    /// local bytes were wrong, or the peer's. It is fetched whole; the peer is kept.
    fn on_partial_piece_refused(&self, _piece: u32) {}

    /// Whether `peer` is a neighbour (its subnet or rack): a piece wanted soon or in the
    /// background that a neighbour which unchoked us has is not asked of a peer that is
    /// not one, and addresses waiting for a connection slot are dialled neighbours first.
    /// Pieces readers wait on go to whoever has them. False for every peer by default.
    fn is_neighbour(&self, _peer: std::net::IpAddr) -> bool {
        false
    }

    /// Whether a peer that is not a neighbour may be asked now for `piece`, which no
    /// neighbour that unchoked us has (`near`: the live neighbours' addresses). Hosts of
    /// a rack that lack the same piece would each fetch it over the rack's uplink; a
    /// picker can give each piece to one of them, the others taking it from that one
    /// once it announces it.
    fn may_ask_far(&self, _piece: u32, _near: &[std::net::IpAddr], _ask: FarAsk) -> bool {
        true
    }

    /// A neighbour told us (`swarmfs_fetching`, under `near`) that it has just asked a peer
    /// farther away for `piece` (`for_read`: a reader waits on it there).
    fn on_neighbour_fetching(&self, _piece: u32, _peer: std::net::IpAddr, _for_read: bool) {}

    /// Whether `deferred` may answer true at all now (asked once per piece request, so
    /// that a picker that defers nothing costs nothing per candidate piece).
    fn defers(&self) -> bool {
        false
    }
}
