import GSEAI
import Hummingbird

extension Request {
    /// The query string, decoded as a form.
    var form: FormQuery { FormQuery(uri.query) }
}
