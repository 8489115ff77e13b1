package io.nbffi.it;

/** Named in a cfg, this class must be refused: it is no Handler. */
public final class NotAHandler {
}
