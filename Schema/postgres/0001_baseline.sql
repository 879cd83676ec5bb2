-- The sync server's store on PostgreSQL, shared by every server process (docs/ARCHITECTURE.md,
-- "PostgreSQL"). SQL only: later changes are new files here, applied in name order once each
-- (`schema_migrations`), under an advisory lock so that processes starting together agree.

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE roster (
    device            text PRIMARY KEY,                  -- base32 device id
    public_key        bytea NOT NULL CHECK (length(public_key) = 32),
    name              text NOT NULL,
    role              text NOT NULL CHECK (role IN ('field', 'press', 'coordinator')),
    enrolled_at       bigint NOT NULL,                   -- Unix ms
    revoked_after_seq bigint CHECK (revoked_after_seq >= 0)
);

-- Each enrolled device's applied head. An upload takes its device's row FOR UPDATE before it
-- reads anything, so one device's chain grows in one transaction at a time, in seq order: a
-- change is written only by a transaction that saw its predecessor committed, and a reader can
-- never see seq s without s - 1 (the pull's cursor is each device's seq).
CREATE TABLE heads (
    device text PRIMARY KEY REFERENCES roster (device),
    seq    bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
    id     bytea
);

-- Every applied change as its author sent it (the envelope: the signed bytes' fields with the
-- values and salts; an erased value leaves only its commitment). `n` is a storage key, never a
-- cursor: it is taken at insert and becomes visible at commit, in any order.
CREATE TABLE changes (
    n            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           bytea NOT NULL UNIQUE CHECK (length(id) = 32),
    device       text NOT NULL REFERENCES roster (device),
    seq          bigint NOT NULL CHECK (seq >= 1),
    prev         bytea CHECK ((seq = 1) = (prev IS NULL)),
    prev_seq     bigint GENERATED ALWAYS AS (NULLIF(seq - 1, 0)) STORED,
    hlc          bigint NOT NULL,
    wall         bigint NOT NULL,
    received_at  bigint NOT NULL,
    envelope     bytea NOT NULL,
    refusal_code text,                                   -- policy refusal: kept, applied nowhere
    refusal      text,
    clock_skew   boolean NOT NULL DEFAULT false,
    UNIQUE (device, seq),                                -- a fork is a unique violation; the pull's index
    UNIQUE (device, seq, id),
    -- The database itself refuses a gap or a wrong predecessor in a chain.
    FOREIGN KEY (device, prev_seq, prev) REFERENCES changes (device, seq, id)
);

-- Which changes wrote to each record: `applied` ones make the record; refused ones are listed
-- so that an erasure of the record reaches their values too.
CREATE TABLE record_changes (
    record  uuid NOT NULL,
    change  bigint NOT NULL REFERENCES changes (n),
    applied boolean NOT NULL,
    PRIMARY KEY (record, change)
);

-- Each record as the merge shows it, for people and tools that read the database (GIS, reports).
CREATE TABLE records (
    id           uuid PRIMARY KEY,
    type         text NOT NULL,
    kind         text,
    deleted      boolean NOT NULL,
    conflicted   boolean NOT NULL,
    erased       boolean NOT NULL,
    last_changed bigint NOT NULL,                        -- HLC
    ref          text,
    status       text,
    team         text,
    review       text,
    json         jsonb NOT NULL                          -- the listing form
);

-- Changes held back until the gap before them in their device's chain is filled.
CREATE TABLE pending (
    device   text NOT NULL,
    seq      bigint NOT NULL,
    id       bytea NOT NULL,
    envelope bytea NOT NULL,
    PRIMARY KEY (device, seq)
);

-- One-time enrolment invitations; only a hash of the token is kept.
CREATE TABLE invites (
    token_hash bytea PRIMARY KEY,
    role       text NOT NULL CHECK (role IN ('field', 'press', 'coordinator')),
    name       text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    used_at    bigint,
    used_by    text
);

-- Signature nonces seen, until their signature expires: the replay cache every process shares.
CREATE TABLE nonces (
    device     text NOT NULL,
    nonce      text NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (device, nonce)
);
CREATE INDEX nonces_expiry ON nonces (expires_at);

CREATE TABLE device_activity (
    device    text PRIMARY KEY,
    last_sync bigint NOT NULL,
    backlog   bigint NOT NULL DEFAULT 0                  -- changes it still lacked after its last exchange
);
