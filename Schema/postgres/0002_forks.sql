-- Forks: a device whose key signed two different changes at one seq (a copy of its replica,
-- restored or cloned, wrote as it; a real fork when both versions left their laptops). The stored chain is the one every replica keeps; `refused` is the other version, as
-- an upload brought it. At most one row per device and seq.
CREATE TABLE forks (
    device  text NOT NULL,
    seq     bigint NOT NULL,
    refused bytea NOT NULL,
    seen_at bigint NOT NULL,    -- Unix ms
    PRIMARY KEY (device, seq)
);
