package io.nbffi;

/* Why a runtime could not start; its message is the loader's error text. */
final class StartException extends Exception {

    private static final long serialVersionUID = 1L;

    StartException(String message) {
        super(message, null, false, false);
    }

    @Override
    public String toString() {
        return getMessage();
    }
}
