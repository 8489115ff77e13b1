package nbffi

// Version is the nbffi release this package belongs to (a tag
// shims/go/vX.Y.Z of the repository, for the Go module).
const Version = "0.2.0"
