/** This SDK's version, sent as Hello.client_version ("pushplat-node/" + VERSION). */
export const VERSION = "0.1.0";
