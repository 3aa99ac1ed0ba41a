package consumer

// Observers returns a Config.Observe that calls each of fns in turn, so a
// consumer can feed metrics, an audit log and a test probe at once. Nil
// entries are skipped. Like Observe, none of them may block.
func Observers(fns ...func(Event)) func(Event) {
	var all []func(Event)
	for _, f := range fns {
		if f != nil {
			all = append(all, f)
		}
	}
	return func(e Event) {
		for _, f := range all {
			f(e)
		}
	}
}
