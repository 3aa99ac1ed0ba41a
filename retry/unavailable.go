package retry

import "errors"

// StoreUnavailable marks err as a failure of the replay's own machinery (a
// dedupe store that stayed unreachable), not of the message: the retrier
// reschedules the entry with backoff without counting an attempt, so a store
// outage can never make an entry dead or release it. StoreUnavailable(nil)
// returns nil.
func StoreUnavailable(err error) error {
	if err == nil {
		return nil
	}
	return &UnavailableError{Err: err}
}

// UnavailableError is the error [StoreUnavailable] returns.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "store unavailable: " + e.Err.Error() }

func (e *UnavailableError) Unwrap() error { return e.Err }

// IsStoreUnavailable reports whether err's chain holds an [UnavailableError].
func IsStoreUnavailable(err error) bool {
	var u *UnavailableError
	return errors.As(err, &u)
}
