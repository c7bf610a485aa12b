//! The ids that cross services, typed so that one cannot be passed where
//! another is meant. Events carry bare `Uuid`s (the wire format stays
//! plain); services convert at their edges with `From`.

crate::typed_id!(
    /// A fan: the `sub` of their member token.
    pub UserId
);
crate::typed_id!(pub ConcertId);
crate::typed_id!(pub ScheduleId);
crate::typed_id!(pub ReservationId);
crate::typed_id!(pub PaymentId);
crate::typed_id!(
    /// A place in a concert's waiting line.
    pub QueueTokenId
);
crate::typed_id!(
    /// One line of a wallet's ledger.
    pub LedgerEntryId
);
