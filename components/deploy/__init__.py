"""Deploy targets. ``local`` runs a real TorchServe on 127.0.0.1 with token auth on."""
