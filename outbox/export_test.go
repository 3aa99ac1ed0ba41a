package outbox

// ClaimSQL is the claim statement, for tests that EXPLAIN it.
const ClaimSQL = claimSQL
